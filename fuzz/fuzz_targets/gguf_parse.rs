//! Feeds arbitrary bytes to the GGUF parser, and anything it accepts to the
//! model-config and tokenizer readers: none may panic.
#![no_main]

use falsify::gguf::GgufHeader;
use falsify::model::ModelConfig;
use falsify::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = GgufHeader::parse(data) {
        let _ = ModelConfig::from_header(&header);
        if let Ok(tok) = Tokenizer::from_header(&header) {
            let ids = tok.encode("hello <|im_start|> world 123", true);
            let _ = tok.decode(&ids);
        }
    }
});
