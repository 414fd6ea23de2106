//! Misbehaves on demand, to show that a bad request hurts only itself.
//!
//! - `/trap`: panics, which traps the instance;
//! - `/loop`: spins forever without yielding;
//! - `/oom`: allocates until memory runs out;
//! - `/log`: writes a line to stdout and one to stderr, then answers;
//! - anything else: answers with the version.
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    match request.uri().path() {
        "/trap" => panic!("faulty app asked to trap"),
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "/log" => {
            println!("faulty says hello on stdout");
            eprintln!("faulty says hello on stderr");
        }
        _ => {}
    }
    Ok(Response::new(
        format!("faulty {}\n", stamp::version()).into(),
    ))
}
