//! Integration tests of the chaos runner: the proxy against a local echo server, the mirror
//! file reader, and the checkers biting on a deliberately broken sink.

mod broken_sink;
mod proxy;
mod source_durability;
