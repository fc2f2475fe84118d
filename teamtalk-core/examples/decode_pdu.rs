//! Decodes captured TeamTalk PDUs given as hex and prints header and message.
//!
//! ```text
//! cargo run -p teamtalk-core --example decode_pdu -- 0000001e 0001 0000 0003 0301 0003 0000 \
//!     080110021800200028013202 6869
//! tshark -r capture.pcap -T fields -e tcp.payload | cargo run -p teamtalk-core --example decode_pdu
//! ```
//!
//! Hex comes from the arguments or, without arguments, from standard input; whitespace and
//! `:` separators are ignored, and the bytes may hold any number of frames (a TCP stream).
//! Passwords and message bodies are shown as sizes only.

use std::io::Read;
use std::process::ExitCode;

use bytes::BytesMut;
use teamtalk_core::PduDecoder;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decode_pdu: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text = if args.is_empty() {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input)?;
        input
    } else {
        args.join("")
    };
    let mut buf = BytesMut::from(&parse_hex(&text)?[..]);

    let mut decoder = PduDecoder::default();
    while let Some(pdu) = decoder.decode(&mut buf)? {
        println!("{:?}", pdu.header);
        match pdu.decode_any() {
            Ok(message) => println!("  {} {message:#?}", message.message_name()),
            Err(e) => println!("  body not decodable: {e}"),
        }
    }
    if !buf.is_empty() {
        println!("{} trailing bytes: an incomplete frame", buf.len());
    }
    Ok(())
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            u8::from_str_radix(pair, 16).map_err(|_| format!("not a hex byte: {pair:?}"))
        })
        .collect()
}
