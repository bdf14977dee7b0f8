//! URL and deploy key parsing.

use std::time::Duration;

use powersync_source_convex::{ConvexApi, ConvexConfig, Int64Mode, ValueEncoding};
use powersync_source_core::ErrorKind;

const KEY: &str = "prod:happy-animal-123|secretpart";

#[test]
fn accepts_every_documented_scheme() {
    for (url, base) in [
        (
            "convex+https://happy-animal-123.convex.cloud",
            "https://happy-animal-123.convex.cloud/",
        ),
        (
            "https://happy-animal-123.convex.cloud/",
            "https://happy-animal-123.convex.cloud/",
        ),
        ("convex+http://127.0.0.1:3210", "http://127.0.0.1:3210/"),
        (
            "http://localhost:3210/convex",
            "http://localhost:3210/convex/",
        ),
    ] {
        let c = ConvexConfig::parse(url, Some(KEY)).unwrap();
        assert_eq!(c.url().as_str(), base, "{url}");
        assert_eq!(c.deploy_key().expose(), KEY);
        assert_eq!(c.polling_interval(), Duration::from_millis(1000));
        assert_eq!(c.int64(), Int64Mode::Text);
        assert_eq!(c.encoding(), ValueEncoding::Auto);
        assert_eq!(c.api(), ConvexApi::Auto);
    }
    for (value, api) in [
        ("auto", ConvexApi::Auto),
        ("data_sync", ConvexApi::DataSync),
        ("streaming_export", ConvexApi::StreamingExport),
    ] {
        let c = ConvexConfig::parse(&format!("https://x.convex.cloud?api={value}"), Some(KEY));
        assert_eq!(c.unwrap().api(), api, "{value}");
    }
}

#[test]
fn options_in_the_query() {
    let c = ConvexConfig::parse(
        "https://x.convex.cloud?polling_interval_ms=250&request_timeout_ms=5000&int64=integer&encoding=json&schema_check_interval_ms=10",
        Some(KEY),
    )
    .unwrap();
    assert_eq!(c.polling_interval(), Duration::from_millis(250));
    assert_eq!(c.request_timeout(), Duration::from_secs(5));
    assert_eq!(c.schema_check_interval(), Duration::from_millis(10));
    assert_eq!(c.int64(), Int64Mode::Integer);
    assert_eq!(c.encoding(), ValueEncoding::Json);
    assert_eq!(c.url().as_str(), "https://x.convex.cloud/");
}

#[test]
fn refusals_are_config_errors_without_the_key() {
    for (url, key) in [
        ("https://x.convex.cloud", None),
        ("https://x.convex.cloud", Some("  ")),
        ("postgres://x", Some(KEY)),
        ("convex+ftp://x", Some(KEY)),
        ("not a url", Some(KEY)),
        ("https://user:pw@x.convex.cloud", Some(KEY)),
        ("https://x.convex.cloud?deploy_key=abc", Some(KEY)),
        ("https://x.convex.cloud?polling_interval_ms=0", Some(KEY)),
        ("https://x.convex.cloud?int64=float", Some(KEY)),
        ("https://x.convex.cloud?bogus=1", Some(KEY)),
        ("https://x.convex.cloud?api=datasync", Some(KEY)),
    ] {
        let e = ConvexConfig::parse(url, key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{url}: {e}");
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("secretpart") && !text.contains(":pw@"),
            "{text}"
        );
    }
    let e = ConvexConfig::parse("https://x.convex.cloud", None).unwrap_err();
    assert!(e.hint().unwrap().contains("Deploy Key"));
}

#[test]
fn debug_hides_the_key() {
    let c = ConvexConfig::parse("https://x.convex.cloud", Some(KEY)).unwrap();
    let text = format!("{c:?}");
    assert!(!text.contains("secretpart"), "{text}");
    let src = powersync_source_convex::ConvexSource::new(c);
    assert!(!format!("{src:?}").contains("secretpart"));
}
