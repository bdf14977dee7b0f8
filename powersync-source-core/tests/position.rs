//! Checkpoint encodings: round-trip, string order = position order, strict parsing.

use powersync_source_core::position::{
    BinlogPosition, ConvexCursor, GtidState, MongoPosition, MssqlLsn, MssqlPosition, PgLsn,
};
use powersync_source_core::{Checkpoint, ErrorKind, Position};
use proptest::prelude::*;

fn check_pair<P: Position>(a: &P, b: &P) {
    let ca = a.to_checkpoint();
    let cb = b.to_checkpoint();
    assert_eq!(&P::from_checkpoint(&ca).unwrap(), a, "round trip of {ca}");
    assert_eq!(&P::parse_checkpoint(ca.as_str()).unwrap(), a);
    assert_eq!(Checkpoint::parse(ca.as_str()).unwrap(), ca);
    assert_eq!(ca.as_str().cmp(cb.as_str()), a.cmp(b), "{ca} vs {cb}");
}

fn gtid_state() -> impl Strategy<Value = GtidState> {
    prop_oneof![
        Just(GtidState::None),
        "[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}:1-[0-9]{1,6}".prop_map(GtidState::MySql),
        "[0-9]{1,3}-[0-9]{1,3}-[0-9]{1,6}(,[0-9]-[0-9]-[0-9]{1,4})?".prop_map(GtidState::MariaDb),
    ]
}

fn binlog() -> impl Strategy<Value = BinlogPosition> {
    (
        0u64..9_999_999_999,
        any::<u64>(),
        "[a-z%:._-]{0,12}",
        gtid_state(),
    )
        .prop_map(|(file_index, offset, basename, gtid)| BinlogPosition {
            file_index,
            offset,
            basename,
            gtid,
        })
}

fn mongo() -> impl Strategy<Value = MongoPosition> {
    (any::<u32>(), any::<u32>(), "[0-9A-Fa-f:]{0,40}").prop_map(
        |(seconds, increment, resume_token)| MongoPosition {
            seconds,
            increment,
            resume_token,
        },
    )
}

fn mssql() -> impl Strategy<Value = MssqlPosition> {
    (any::<[u8; 10]>(), any::<[u8; 10]>()).prop_map(|(l, s)| MssqlPosition {
        lsn: MssqlLsn(l),
        seqval: MssqlLsn(s),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pg_lsn_order(a in any::<u64>(), b in any::<u64>()) {
        check_pair(&PgLsn(a), &PgLsn(b));
        // Small deltas matter most: neighbours must order too.
        check_pair(&PgLsn(a), &PgLsn(a.wrapping_add(1)));
    }

    #[test]
    fn binlog_order(a in binlog(), b in binlog()) {
        check_pair(&a, &b);
        let mut c = a.clone();
        c.offset = c.offset.saturating_add(1);
        check_pair(&a, &c);
    }

    #[test]
    fn mongo_order(a in mongo(), b in mongo()) {
        check_pair(&a, &b);
    }

    #[test]
    fn mssql_order(a in mssql(), b in mssql()) {
        check_pair(&a, &b);
        check_pair(&MssqlPosition::after_transaction(a.lsn), &MssqlPosition::after_transaction(a.lsn.increment()));
    }

    #[test]
    fn convex_order(a in 0i64..=i64::MAX, b in 0i64..=i64::MAX) {
        check_pair(&ConvexCursor::new(a).unwrap(), &ConvexCursor::new(b).unwrap());
    }

    #[test]
    fn convex_data_sync_order(
        a in 0i64..=i64::MAX,
        b in 0i64..=i64::MAX,
        ta in "[!-~]{1,64}",
        tb in "[!-~]{1,64}",
    ) {
        let x = ConvexCursor::data_sync(a, &ta).unwrap();
        check_pair(&x, &ConvexCursor::data_sync(b, &tb).unwrap());
        // Same timestamp: the token breaks the tie, as a string would.
        check_pair(&x, &ConvexCursor::data_sync(a, &tb).unwrap());
        // A later timestamp sorts later whatever the tokens.
        if a < i64::MAX {
            check_pair(&x, &ConvexCursor::data_sync(a + 1, &tb).unwrap());
        }
        assert_eq!(x.get(), a);
        assert_eq!(x.token(), Some(ta.as_str()));
        assert_eq!(x.to_checkpoint().version(), 2);
    }

    #[test]
    fn garbage_never_panics(s in ".{0,80}") {
        let _ = Checkpoint::parse(&s);
        let _ = PgLsn::parse_checkpoint(&s);
        let _ = BinlogPosition::parse_checkpoint(&s);
        let _ = MongoPosition::parse_checkpoint(&s);
        let _ = MssqlPosition::parse_checkpoint(&s);
        let _ = ConvexCursor::parse_checkpoint(&s);
    }
}

#[test]
fn known_encodings() {
    assert_eq!(
        PgLsn(0x16_B374_D848).to_checkpoint().as_str(),
        "postgres:v1:00000016/B374D848"
    );
    assert_eq!(
        "16/B374D848".parse::<PgLsn>().unwrap(),
        PgLsn(0x16_B374_D848)
    );
    assert_eq!(PgLsn(0x16_B374_D848).to_string(), "16/B374D848");
    let b = BinlogPosition {
        file_index: 42,
        offset: 4,
        basename: "mysql-bin".into(),
        gtid: GtidState::MariaDb("0-1-100".into()),
    };
    assert_eq!(
        b.to_checkpoint().as_str(),
        "mysql:v1:0000000042:00000000000000000004:mysql-bin:g:0-1-100"
    );
    assert_eq!(b.file_name(), "mysql-bin.000042");
    assert_eq!(
        BinlogPosition::split_file_name("mysql-bin.000042"),
        Some(("mysql-bin", 42))
    );
    assert_eq!(
        ConvexCursor::new(5).unwrap().to_checkpoint().as_str(),
        "convex:v1:0000000000000000005"
    );
    assert_eq!(ConvexCursor::new(-1), None);
    assert_eq!(
        ConvexCursor::data_sync(5, "eyJh+/=")
            .unwrap()
            .to_checkpoint()
            .as_str(),
        "convex:v2:0000000000000000005:eyJh+/="
    );
    // Both forms parse; each version holds its own shape.
    assert_eq!(
        ConvexCursor::parse_checkpoint("convex:v2:0000000000000000005:a:b")
            .unwrap()
            .token(),
        Some("a:b")
    );
    for bad in [
        "convex:v2:0000000000000000005",
        "convex:v2:0000000000000000005:",
        "convex:v2:000000000000000005:tok",
        "convex:v2:0000000000000000005:to k",
        "convex:v2:0000000000000000005:tök",
        "convex:v1:0000000000000000005:tok",
        "convex:v3:0000000000000000005:tok",
    ] {
        assert!(ConvexCursor::parse_checkpoint(bad).is_err(), "{bad}");
    }
    assert_eq!(ConvexCursor::data_sync(-1, "t"), None);
    assert_eq!(ConvexCursor::data_sync(1, ""), None);
    assert_eq!(ConvexCursor::data_sync(1, &"t".repeat(8193)), None);
    assert!(ConvexCursor::data_sync(1, &"t".repeat(8192)).is_some());
    let m = MongoPosition {
        seconds: 1,
        increment: 2,
        resume_token: "8263ABCD".into(),
    };
    assert_eq!(
        m.to_checkpoint().as_str(),
        "mongodb:v1:0000000100000002:8263ABCD"
    );
    let s = MssqlPosition::after_transaction(MssqlLsn([0, 0, 0, 0x2A, 0, 0, 0, 0x10, 0, 1]));
    assert_eq!(
        s.to_checkpoint().as_str(),
        "mssql:v1:0000002A000000100001:FFFFFFFFFFFFFFFFFFFF"
    );
    assert!(s.is_transaction_boundary());
}

#[test]
fn strict_parsing_says_what_is_wrong() {
    let cases = [
        ("", "not a checkpoint"),
        ("hello", "not a checkpoint"),
        ("postgres:1:00000000/00000001", "no valid version"),
        ("oracle:v1:123", "unknown source `oracle`"),
        ("postgres:v9:00000000/00000001", "upgrade"),
        ("postgres:v1:", "empty position"),
    ];
    for (input, needle) in cases {
        let err = Checkpoint::parse(input).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(needle), "{input}: {err}");
    }
    let body_errors = [
        "postgres:v1:0/1",
        "postgres:v1:00000000/0000000g",
        "postgres:v1:00000000/0000000a",
        "postgres:v1:0000000000000001",
    ];
    for input in body_errors {
        let err = PgLsn::parse_checkpoint(input).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("corrupt"), "{input}: {err}");
    }
    // A checkpoint of another source is refused by name.
    let err = PgLsn::parse_checkpoint("convex:v1:0000000000000000005").unwrap_err();
    assert!(
        err.to_string().contains("belongs to a convex source"),
        "{err}"
    );
    assert!(ConvexCursor::parse_checkpoint("convex:v1:9999999999999999999").is_err());
    assert!(
        BinlogPosition::parse_checkpoint("mysql:v1:0000000001:00000000000000000004:b%zz:n:")
            .is_err()
    );
}
