//! Arbitrary bytes and text into every decoder the connector owns: an error or a value, never
//! a panic.

use powersync_source_mysql::decoders as d;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn binary_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = d::mariadb_gtid(&bytes);
        let _ = d::mariadb_gtid_list(&bytes);
        let _ = d::mariadb_binlog_checkpoint(&bytes);
        let _ = d::mariadb_annotate_rows(&bytes);
        let _ = d::mysql_binary_json(&bytes);
        let _ = d::transaction_payload_events(&bytes);
        let _ = d::row_images(&bytes, false);
        let _ = d::row_images(&bytes, true);
        for cs in ["utf8mb4", "latin1", "ucs2", "utf16le", "utf32", "sjis", "ascii"] {
            let _ = d::charset(cs, &bytes);
        }
    }

    #[test]
    fn binary_json_with_a_valid_type_byte(ty in 0u8..16, rest in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut b = vec![ty];
        b.extend_from_slice(&rest);
        let _ = d::mysql_binary_json(&b);
    }

    /// Mostly well-formed images (a valid null bitmap first) reach deeper into the value
    /// decoders than uniform noise.
    #[test]
    fn row_images_with_plausible_framing(nulls in any::<u8>(), rest in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = vec![nulls];
        b.extend_from_slice(&rest);
        let _ = d::row_images(&b, false);
        let _ = d::row_images(&b, true);
    }

    #[test]
    fn text_decoders_never_panic(s in ".{0,120}") {
        let _ = d::mariadb_gtid_pos(&s);
        let _ = d::mysql_gtid_set(&s);
        let _ = d::ddl(&s);
        let _ = d::snapshot_key(&s);
        let _ = powersync_source_mysql::MySqlConfig::parse(&format!("mysql://{s}"));
    }

    #[test]
    fn gtid_positions_round_trip(entries in proptest::collection::btree_map(any::<u32>(), (any::<u32>(), any::<u64>()), 0..5)) {
        let text: Vec<String> = entries.iter().map(|(d, (s, q))| format!("{d}-{s}-{q}")).collect();
        let text = text.join(",");
        prop_assert_eq!(d::mariadb_gtid_pos(&text).unwrap(), text);
    }
}
