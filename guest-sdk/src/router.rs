//! A small router: method + path patterns with `:name` parameters and a
//! trailing `*rest`, tried in the order they were added.
//!
//! It only picks a handler; it does not touch bodies or headers beyond the
//! `404`/`405` answers it gives when nothing matches.

use wstd::http::{HeaderValue, Method};

use crate::handler::ResponseFuture;
use crate::{Handler, IntoResponse, Request, StatusCode};

type BoxHandler = Box<dyn Fn(Request) -> ResponseFuture>;

/// Routes requests to handlers by method and path.
///
/// ```no_run
/// use wasm_host_sdk::{Request, RequestExt, Router};
/// let router = Router::new()
///     .get("/users/:id", |req: Request| format!("user {}\n", req.param("id").unwrap_or("")))
///     .get("/files/*path", |req: Request| format!("file {}\n", req.param("path").unwrap_or("")));
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    fallback: Option<BoxHandler>,
}

struct Route {
    /// `None` matches every method.
    method: Option<Method>,
    pattern: Vec<Segment>,
    handler: BoxHandler,
}

enum Segment {
    Literal(String),
    Param(String),
    /// Matches the rest of the path, possibly nothing.
    Rest(String),
}

impl Router {
    /// A router with no routes: every request gets `404`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route for `method` and `path`. In `path`, `:name` matches one
    /// segment and `*name` (last) the rest; read them with
    /// [`RequestExt::param`].
    pub fn route<H: Handler<M>, M>(mut self, method: Method, path: &str, handler: H) -> Self {
        self.routes.push(Route {
            method: Some(method),
            pattern: parse(path),
            handler: erase(handler),
        });
        self
    }

    /// Adds a `GET` route (it answers `HEAD` too).
    pub fn get<H: Handler<M>, M>(self, path: &str, handler: H) -> Self {
        self.route(Method::GET, path, handler)
    }

    /// Adds a `POST` route.
    pub fn post<H: Handler<M>, M>(self, path: &str, handler: H) -> Self {
        self.route(Method::POST, path, handler)
    }

    /// Adds a `PUT` route.
    pub fn put<H: Handler<M>, M>(self, path: &str, handler: H) -> Self {
        self.route(Method::PUT, path, handler)
    }

    /// Adds a `PATCH` route.
    pub fn patch<H: Handler<M>, M>(self, path: &str, handler: H) -> Self {
        self.route(Method::PATCH, path, handler)
    }

    /// Adds a `DELETE` route.
    pub fn delete<H: Handler<M>, M>(self, path: &str, handler: H) -> Self {
        self.route(Method::DELETE, path, handler)
    }

    /// Adds a route for `path` that takes every method.
    pub fn any<H: Handler<M>, M>(mut self, path: &str, handler: H) -> Self {
        self.routes.push(Route {
            method: None,
            pattern: parse(path),
            handler: erase(handler),
        });
        self
    }

    /// Answers the requests no route matches, instead of `404`.
    pub fn fallback<H: Handler<M>, M>(mut self, handler: H) -> Self {
        self.fallback = Some(erase(handler));
        self
    }

    fn dispatch(&self, mut request: Request) -> ResponseFuture {
        let path: Vec<&str> = request
            .uri()
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let method = request.method().clone();
        let mut allowed: Vec<&Method> = Vec::new();
        let mut found = None;
        for route in &self.routes {
            let Some(params) = route.matches(&path) else {
                continue;
            };
            match &route.method {
                Some(m) if *m != method && !(method == Method::HEAD && *m == Method::GET) => {
                    allowed.push(m);
                }
                _ => {
                    found = Some((route, params));
                    break;
                }
            }
        }
        if let Some((route, params)) = found {
            request.extensions_mut().insert(params);
            return (route.handler)(request);
        }
        if let Some(fallback) = &self.fallback {
            return fallback(request);
        }
        let response = if allowed.is_empty() {
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        } else {
            let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            let mut response =
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
            if let Ok(value) = HeaderValue::from_str(&list.join(", ")) {
                response.headers_mut().insert("allow", value);
            }
            response
        };
        Box::pin(std::future::ready(response))
    }
}

impl Handler<Router> for Router {
    fn call(&self, request: Request) -> ResponseFuture {
        self.dispatch(request)
    }
}

impl Route {
    fn matches(&self, path: &[&str]) -> Option<Params> {
        let mut params = Params::default();
        let mut rest = path;
        for segment in &self.pattern {
            match segment {
                Segment::Rest(name) => {
                    params
                        .0
                        .push((name.clone(), decode(&rest.join("/"), false)));
                    return Some(params);
                }
                Segment::Literal(literal) => {
                    let (first, tail) = rest.split_first()?;
                    if first != literal {
                        return None;
                    }
                    rest = tail;
                }
                Segment::Param(name) => {
                    let (first, tail) = rest.split_first()?;
                    params.0.push((name.clone(), decode(first, false)));
                    rest = tail;
                }
            }
        }
        rest.is_empty().then_some(params)
    }
}

fn parse(path: &str) -> Vec<Segment> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if let Some(name) = s.strip_prefix(':') {
                Segment::Param(name.to_string())
            } else if let Some(name) = s.strip_prefix('*') {
                Segment::Rest(name.to_string())
            } else {
                Segment::Literal(s.to_string())
            }
        })
        .collect()
}

fn erase<H: Handler<M>, M>(handler: H) -> BoxHandler {
    Box::new(move |request| handler.call(request))
}

/// The path parameters a route matched, kept in the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of parameter `name`, percent-decoded.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every parameter, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Conveniences for reading a [`Request`].
pub trait RequestExt {
    /// A path parameter of the matched route (`:name` or `*name`).
    fn param(&self, name: &str) -> Option<&str>;

    /// The first value of query parameter `name`, decoded (`+` is a space).
    fn query(&self, name: &str) -> Option<String>;
}

impl RequestExt for Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.extensions().get::<Params>()?.get(name)
    }

    fn query(&self, name: &str) -> Option<String> {
        query_param(self.uri(), name)
    }
}

/// The first value of query parameter `name` in `uri`, decoded; shared with
/// [`realtime::Conn`](crate::realtime::Conn), which has no `Request`.
pub(crate) fn query_param(uri: &wstd::http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key, true) == name).then(|| decode(value, true))
    })
}

/// Percent-decodes `text`; in a query, `+` also means a space. Malformed
/// escapes are kept as they are.
fn decode(text: &str, query: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') if query => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Response};

    fn request(method: Method, path: &str) -> Request {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().unwrap();
        request
    }

    /// Runs the router on one request; every handler here answers at once.
    fn answer(router: &Router, method: Method, path: &str) -> Response {
        futures_lite::future::block_on(router.call(request(method, path)))
    }

    fn show(req: Request) -> String {
        let params: Vec<String> = req
            .extensions()
            .get::<Params>()
            .map(|p| p.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        params.join(",")
    }

    fn router() -> Router {
        Router::new()
            .get("/", |_: Request| "root")
            .get("/users/:id", show)
            .delete("/users/:id", |_: Request| StatusCode::NO_CONTENT)
            .get("/users/:id/posts/:post", show)
            .get("/files/*path", show)
    }

    fn text(response: Response) -> (u16, String) {
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let text = futures_lite::future::block_on(body.str_contents())
            .unwrap()
            .to_owned();
        (status, text)
    }

    #[test]
    fn paths_pick_routes_and_fill_params() {
        let r = router();
        assert_eq!(text(answer(&r, Method::GET, "/")), (200, "root".into()));
        assert_eq!(text(answer(&r, Method::GET, "/users/7")).1, "id=7");
        assert_eq!(text(answer(&r, Method::GET, "/users/7/")).1, "id=7");
        assert_eq!(
            text(answer(&r, Method::GET, "/users/a%2Fb/posts/9?x=1")).1,
            "id=a/b,post=9"
        );
        assert_eq!(
            text(answer(&r, Method::GET, "/files/a/b/c.txt")).1,
            "path=a/b/c.txt"
        );
        assert_eq!(text(answer(&r, Method::GET, "/files")).1, "path=");
        assert_eq!(answer(&r, Method::DELETE, "/users/7").status(), 204);
    }

    #[test]
    fn misses_get_404_or_405_with_allow() {
        let r = router();
        assert_eq!(answer(&r, Method::GET, "/users").status(), 404);
        assert_eq!(answer(&r, Method::GET, "/users/7/extra").status(), 404);
        let wrong = answer(&r, Method::PUT, "/users/7");
        assert_eq!(wrong.status(), 405);
        assert_eq!(wrong.headers()["allow"], "GET, DELETE");
        assert_eq!(answer(&r, Method::HEAD, "/").status(), 200);
        let with_fallback = router().fallback(|_: Request| (StatusCode::IM_A_TEAPOT, "tea"));
        assert_eq!(answer(&with_fallback, Method::GET, "/nope").status(), 418);
    }

    #[test]
    fn queries_and_escapes_decode() {
        let req = request(Method::GET, "/?q=a+b%21&empty&x=%zz");
        assert_eq!(req.query("q").as_deref(), Some("a b!"));
        assert_eq!(req.query("empty").as_deref(), Some(""));
        assert_eq!(req.query("x").as_deref(), Some("%zz"));
        assert_eq!(req.query("missing"), None);
        // `+` is a space only in a query, not in a path.
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("%E2%82%AC", false), "€");
        assert_eq!(decode("100%", false), "100%");
    }
}
