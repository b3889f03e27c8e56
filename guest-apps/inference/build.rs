//! Trains the built-in n-gram model from corpus.txt at build time and writes it to
//! $OUT_DIR/model_tables.rs as static tables (no training cost per request).

#[path = "src/train.rs"]
#[allow(dead_code)]
mod train;

fn main() {
    println!("cargo:rerun-if-changed=corpus.txt");
    println!("cargo:rerun-if-changed=src/train.rs");
    let corpus = std::fs::read_to_string("corpus.txt").expect("read corpus.txt");
    let model = train::train(&corpus);
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("model_tables.rs");
    std::fs::write(out, model.render_rust()).expect("write model_tables.rs");
}
