//! Which app a request on a shared listener belongs to: by its host name
//! and path prefix. One table per listening address.
//!
//! Only matching. The table never changes an app; a config reload builds a
//! new table and the listener swaps it in whole.

use std::sync::Arc;

use crate::app::App;

/// Where an app is reached on its listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Host names (`shop.example.com`, or `*.example.com` for any
    /// subdomain); empty matches every host.
    pub hosts: Vec<String>,
    /// Path prefix, matched on whole segments; `/` matches every path.
    pub path: String,
}

impl Route {
    /// Matches every request.
    pub fn any() -> Self {
        Self {
            hosts: Vec::new(),
            path: "/".into(),
        }
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = self.hosts.is_empty()
            || host.is_some_and(|h| self.hosts.iter().any(|pattern| host_matches(pattern, h)));
        host_ok && prefix_matches(&self.path, path)
    }

    /// More specific routes are tried first: a host before none, then the
    /// longer path.
    fn specificity(&self) -> (bool, usize) {
        (!self.hosts.is_empty(), self.path.len())
    }

    /// Whether two routes would take exactly the same requests.
    pub fn same_as(&self, other: &Route) -> bool {
        let mut a: Vec<_> = self.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        let mut b: Vec<_> = other.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        a.sort();
        b.sort();
        a == b && self.path.trim_end_matches('/') == other.path.trim_end_matches('/')
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host.len().checked_sub(domain.len() + 1).is_some_and(|cut| {
            host.as_bytes()[cut] == b'.' && host[cut + 1..].eq_ignore_ascii_case(domain)
        }),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The apps of one listener and their routes.
pub struct RouteTable {
    entries: Vec<(Route, Arc<App>)>,
}

impl RouteTable {
    /// A table of `entries`, tried most specific first.
    pub fn new(mut entries: Vec<(Route, Arc<App>)>) -> Self {
        entries.sort_by_key(|(route, _)| std::cmp::Reverse(route.specificity()));
        Self { entries }
    }

    /// The app for `req`, by its host (without port) and path.
    pub fn pick<B>(&self, req: &http::Request<B>) -> Option<&Arc<App>> {
        // One app taking everything: no header parsing or matching on the
        // hot path.
        if let [(route, app)] = self.entries.as_slice()
            && route.hosts.is_empty()
            && route.path == "/"
        {
            return Some(app);
        }
        let (host, path) = (request_host(req), req.uri().path());
        self.entries
            .iter()
            .find(|(route, _)| route.matches(host, path))
            .map(|(_, app)| app)
    }

    /// The apps in the table.
    pub fn apps(&self) -> impl Iterator<Item = &Arc<App>> {
        self.entries.iter().map(|(_, app)| app)
    }
}

/// The host a request names (URI authority, else `Host` header), without
/// its port.
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    let raw = match req.uri().host() {
        Some(host) => host,
        None => req.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    Some(match raw.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[&str], path: &str) -> Route {
        Route {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path: path.into(),
        }
    }

    #[test]
    fn hosts_and_prefixes_match_whole_names_and_segments() {
        let r = route(&["shop.example.com", "*.shop.test"], "/api");
        assert!(r.matches(Some("SHOP.example.com"), "/api"));
        assert!(r.matches(Some("eu.shop.test"), "/api/users"));
        assert!(!r.matches(Some("shop.test"), "/api"));
        assert!(!r.matches(Some("shop.example.com"), "/apis"));
        assert!(!r.matches(None, "/api"));
        assert!(Route::any().matches(None, "/anything"));
        assert!(route(&[], "/api/").matches(None, "/api"));
    }

    #[test]
    fn hosts_lose_their_port() {
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "shop.local:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("shop.local"));
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "[::1]")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("[::1]"));
    }

    #[test]
    fn same_routes_are_found_out() {
        assert!(route(&["A.test", "b.test"], "/x/").same_as(&route(&["b.test", "a.test"], "/x")));
        assert!(!route(&["a.test"], "/").same_as(&route(&[], "/")));
    }
}
