//! do-work path validation: `downstream::check_path` on arbitrary strings, and
//! `Downstream::prepare` on arbitrary `request` JSON. Nothing may panic, and whatever passes
//! must stay on the configured origin, under the base path and an allowed prefix, with no dot
//! segment, no `//` and no escape.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use obo_vault::config::DownstreamSettings;
use obo_vault::downstream::{check_path, Downstream, UnverifiedRequest, Work as _};

const BASE: &str = "https://graph.example.com/v1.0";

/// One client for the whole run (`prepare` never sends anything).
static DOWNSTREAM: LazyLock<Downstream> = LazyLock::new(|| {
    Downstream::new(
        reqwest::Client::new(),
        DownstreamSettings {
            name: "graph".into(),
            base_url: url::Url::parse(BASE).unwrap(),
            scopes: vec!["https://graph.example.com/.default".into()],
            allowed_paths: allowed(),
            timeout: Duration::from_secs(1),
        },
    )
});

fn allowed() -> Vec<String> {
    vec!["/me".into(), "/users".into(), "/sites/root".into()]
}

fn assert_safe(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains("//"), "{path:?}");
    assert!(!path.split('/').any(|s| s == "." || s == ".."), "{path:?}");
    assert!(!path.contains(['%', '\\', '@', ':', '?', '#']), "{path:?}");
    assert!(path.chars().all(|c| c.is_ascii_graphic()), "{path:?}");
    assert!(
        allowed()
            .iter()
            .any(|p| path == p || path.starts_with(&format!("{p}/"))),
        "{path:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if selector & 1 == 0 {
        if check_path(text, &allowed()).is_ok() {
            assert_safe(text);
        }
        return;
    }
    let Ok(unverified) = serde_json::from_str::<UnverifiedRequest>(text) else {
        return;
    };
    let base = url::Url::parse(BASE).unwrap();
    if let Ok(request) = DOWNSTREAM.prepare(Some(unverified)) {
        assert_safe(request.path());
        let url = request.url();
        assert_eq!(url.origin(), base.origin());
        assert!(url.path().starts_with("/v1.0/"), "{url}");
        assert!(url.fragment().is_none());
        assert_eq!(url.path(), format!("/v1.0{}", request.path()));
    }
});
