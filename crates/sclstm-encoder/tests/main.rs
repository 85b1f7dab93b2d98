//! Tests of the encoder against `transformers` and of its cache.

mod cache;
mod oracle;
