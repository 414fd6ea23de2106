//! A command component (`wasi:cli/run`) with no HTTP handler. The host must
//! refuse to load it, with a reason.
fn main() {
    println!("this component has no wasi:http/incoming-handler export");
}
