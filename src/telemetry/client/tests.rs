use super::*;

#[test]
fn url_full_has_no_user_info_query_or_fragment() {
    for (url, expected) in [
        (
            "https://user:secret@login.example.com:8443/tenant/oauth2/v2.0/token?code=abc#frag",
            "https://login.example.com:8443/tenant/oauth2/v2.0/token",
        ),
        (
            "https://vault.example.net/secrets/key/1?api-version=7.5",
            "https://vault.example.net/secrets/key/1",
        ),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/"),
        ("https://[::1]/a/b?sig=x", "https://[::1]/a/b"),
    ] {
        let url = url::Url::parse(url).expect("a valid URL");
        assert_eq!(without_query(&url), expected);
    }
}

#[test]
fn standard_methods_are_recorded_as_sent_and_any_other_as_other() {
    for method in ["GET", "POST", "DELETE", "TRACE"] {
        assert_eq!(method_value(method), method);
    }
    for method in ["PROPFIND", "get", "X-ANYTHING-A-CALLER-CHOSE"] {
        assert_eq!(method_value(method), "_OTHER");
    }
}
