//! The web UI, embedded in the binary: plain HTML, CSS, JavaScript and SVG
//! (no build step, no framework, nothing fetched from the network). It reads
//! Flink's REST shapes, so the same files serve one job (`/` of the job's
//! REST server) and every registered job (`cairn dashboard`).

/// The UI's files: (path, content type, bytes).
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../ui/app.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../ui/favicon.svg")),
];

/// The content security policy of the UI's pages: everything from the
/// server itself, nothing inline, no other origin.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// The asset at `path` (`""` is `index.html`).
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|(p, _, _)| *p == path).map(|(_, t, b)| (*t, *b))
}

/// The response for a UI path, if it is one.
pub fn response(path: &str) -> Option<crate::Response> {
    let (content_type, bytes) = asset(path)?;
    Some(
        crate::Response::bytes(200, content_type_static(content_type), bytes.to_vec())
            .with_header("Content-Security-Policy", CSP)
            .with_header("X-Frame-Options", "DENY"),
    )
}

fn content_type_static(t: &'static str) -> &'static str {
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_served_with_a_strict_policy() {
        let r = super::response("").unwrap();
        assert!(r.content_type.starts_with("text/html"));
        assert!(String::from_utf8_lossy(&r.body).contains("app.js"));
        assert!(r
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'"));
        assert!(super::response("app.js").is_some());
        assert!(super::response("../Cargo.toml").is_none());
    }
}
