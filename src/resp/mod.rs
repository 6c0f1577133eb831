//! RESP wire format: request scanning, reply boundary scanning, and encoding of replies the
//! proxy builds itself.

pub mod encode;
pub mod reply;
pub mod request;
pub mod value;

pub use encode::{Encoder, Proto};
pub use reply::ReplyScanner;
pub use request::{Limits, Request, RequestScanner};
