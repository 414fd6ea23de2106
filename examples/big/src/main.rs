//! A large app: several libraries with big tables and much code, each used
//! on some route so none is optimized away.
//!
//! - `/md?text=...`: renders Markdown to HTML;
//! - `/tz?zone=Europe/Paris`: the current time in a time zone;
//! - `/re?text=...`: the words of the text, by a Unicode-aware regex;
//! - `/url?u=...`: a parsed URL as JSON;
//! - `/toml?text=...`: TOML converted to JSON;
//! - anything else: `big vN`.
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let query = request.uri().query().unwrap_or("").to_string();
    let arg = |key: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let body = match request.uri().path() {
        "/md" => {
            let mut html = String::new();
            pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new(&arg("text")));
            html
        }
        "/tz" => match arg("zone").parse::<chrono_tz::Tz>() {
            Ok(zone) => chrono::Utc::now().with_timezone(&zone).to_rfc3339(),
            Err(e) => format!("unknown zone: {e}"),
        },
        "/re" => {
            let words = regex::Regex::new(r"\p{L}+").map_err(|e| Error::msg(e.to_string()))?;
            let text = arg("text");
            let found: Vec<&str> = words.find_iter(&text).map(|m| m.as_str()).collect();
            serde_json::to_string(&found)?
        }
        "/url" => match url::Url::parse(&arg("u")) {
            Ok(u) => serde_json::json!({"host": u.host_str(), "path": u.path()}).to_string(),
            Err(e) => format!("bad url: {e}"),
        },
        "/toml" => match arg("text").parse::<toml::Table>() {
            Ok(table) => serde_json::to_string(&table)?,
            Err(e) => format!("bad toml: {e}"),
        },
        _ => format!("big {}", stamp::version()),
    };
    Ok(Response::new(format!("{body}\n").into()))
}
