//! Every command of the table, driven by the `.proto` descriptors themselves (compiled with
//! protox at test time), so no message can be forgotten:
//!
//! - with every field set (repeated fields twice, nested messages filled recursively), the
//!   canonical encoding decodes through `AnyMessage` and re-encodes to the same bytes, and the
//!   decoded message reports the right command and protobuf name;
//! - with every field at its default, the encoding carries every required field (the original
//!   clients reject a message missing one) and nothing else, at every nesting level;
//! - an empty body decodes (missing required fields take their defaults).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto};
use teamtalk_core::{AnyMessage, CommandId};

struct Schema {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<i32>>,
}

fn schema() -> Schema {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../teamtalk-proto/proto");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    assert_eq!(files.len(), 9);
    let set = protox::compile(&files, [&dir]).unwrap();
    let mut schema = Schema {
        messages: HashMap::new(),
        enums: HashMap::new(),
    };
    for file in set.file {
        let package = file.package().to_owned();
        for message in file.message_type {
            schema
                .messages
                .insert(format!(".{package}.{}", message.name()), message);
        }
        for e in file.enum_type {
            let values = e.value.iter().map(|v| v.number()).collect();
            schema
                .enums
                .insert(format!(".{package}.{}", e.name()), values);
        }
    }
    schema
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(field: &FieldDescriptorProto, wire_type: u64, out: &mut Vec<u8>) {
    varint((u64::from(field.number() as u32) << 3) | wire_type, out);
}

fn sorted_fields(message: &DescriptorProto) -> Vec<&FieldDescriptorProto> {
    let mut fields: Vec<_> = message.field.iter().collect();
    fields.sort_by_key(|f| f.number());
    fields
}

/// Canonical encoding (fields in tag order, as protobuf C++ writes them) of `name` with every
/// field set to a non-default value.
fn encode_full(schema: &Schema, name: &str) -> Vec<u8> {
    let message = &schema.messages[name];
    let mut out = Vec::new();
    for field in sorted_fields(message) {
        let count = if field.label() == Label::Repeated {
            2
        } else {
            1
        };
        for i in 0..count {
            let n = u64::from(field.number() as u32);
            match field.r#type() {
                Type::Uint32 => {
                    key(field, 0, &mut out);
                    varint(200 + n * 7 + i, &mut out); // two-byte varints
                }
                Type::Enum => {
                    let values = &schema.enums[field.type_name()];
                    // not the first value: that is the default
                    let value = values[values.len().min(2 + i as usize) - 1];
                    key(field, 0, &mut out);
                    varint(u64::from(value as u32), &mut out);
                }
                Type::String => {
                    let text = format!("{}-{i}-é", field.name());
                    key(field, 2, &mut out);
                    varint(text.len() as u64, &mut out);
                    out.extend_from_slice(text.as_bytes());
                }
                Type::Bytes => {
                    let data = [0x00, 0xff, n as u8, i as u8, 0x80];
                    key(field, 2, &mut out);
                    varint(data.len() as u64, &mut out);
                    out.extend_from_slice(&data);
                }
                Type::Message => {
                    let nested = encode_full(schema, field.type_name());
                    key(field, 2, &mut out);
                    varint(nested.len() as u64, &mut out);
                    out.extend_from_slice(&nested);
                }
                other => panic!(
                    "{name}.{}: type {other:?} is not in the TeamTalk schema",
                    field.name()
                ),
            }
        }
    }
    out
}

/// Reads the top-level fields of an encoding: (tag, wire type, payload of length-delimited).
fn fields(mut bytes: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
    fn read_varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = bytes.split_first().expect("truncated varint");
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes);
        let (tag, wire_type) = ((key >> 3) as u32, (key & 7) as u8);
        let payload = match wire_type {
            0 => {
                read_varint(&mut bytes);
                Vec::new()
            }
            2 => {
                let len = read_varint(&mut bytes) as usize;
                let (payload, rest) = bytes.split_at(len);
                bytes = rest;
                payload.to_vec()
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((tag, wire_type, payload));
    }
    out
}

/// Asserts that `encoded` (a default message of type `name`) holds exactly the required fields,
/// recursing into required sub-messages.
fn assert_exactly_required(schema: &Schema, name: &str, encoded: &[u8]) {
    let message = &schema.messages[name];
    let got = fields(encoded);
    let got_tags: Vec<u32> = got.iter().map(|f| f.0).collect();
    let required: Vec<&FieldDescriptorProto> = sorted_fields(message)
        .into_iter()
        .filter(|f| f.label() == Label::Required)
        .collect();
    let want: Vec<u32> = required.iter().map(|f| f.number() as u32).collect();
    assert_eq!(got_tags, want, "{name}: emitted tags vs required tags");
    for (field, (_, _, payload)) in required.iter().zip(&got) {
        if field.r#type() == Type::Message {
            assert_exactly_required(schema, field.type_name(), payload);
        }
    }
}

/// The message a command carries, as decoded from an empty body.
fn empty(command: CommandId) -> AnyMessage {
    AnyMessage::decode(command, &[][..])
        .unwrap_or_else(|e| panic!("{command}: an empty body must decode leniently: {e}"))
}

/// With `TEAMTALK_FUZZ_SEEDS=<dir>`, writes `frame` as a seed of the `pdu_stream` fuzz target
/// (leading 0 = no chunk cuts): `TEAMTALK_FUZZ_SEEDS=$PWD/fuzz/corpus/pdu_stream cargo test
/// -p teamtalk-core --test every_message`.
fn write_fuzz_seed(name: &str, frame: &[u8]) {
    if let Some(dir) = std::env::var_os("TEAMTALK_FUZZ_SEEDS") {
        let mut seed = vec![0u8];
        seed.extend_from_slice(frame);
        std::fs::write(PathBuf::from(dir).join(name), seed).unwrap();
    }
}

#[test]
fn every_command_has_a_message() {
    assert_eq!(CommandId::ALL.len(), 95);
    let mut names: Vec<String> = CommandId::ALL
        .iter()
        .map(|&c| empty(c).full_name())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        95,
        "no message type is carried by two commands"
    );
}

#[test]
fn every_message_round_trips_with_every_field_set() {
    let schema = schema();
    for &command in CommandId::ALL {
        let name = format!(".{}", empty(command).full_name());
        let full = encode_full(&schema, &name);
        let decoded = AnyMessage::decode(command, Bytes::from(full.clone()))
            .unwrap_or_else(|e| panic!("{command} ({name}): {e}"));
        assert_eq!(decoded.command(), command);
        assert_eq!(format!(".{}", decoded.full_name()), name);
        assert_eq!(
            decoded.encode_to_vec(),
            full,
            "{command} ({name}) re-encodes byte for byte"
        );
        assert_eq!(decoded.encoded_len(), full.len());
        if !full.is_empty() {
            assert_ne!(decoded, empty(command), "{command}: fields were read");
        }
        let pdu = decoded.to_pdu(77);
        write_fuzz_seed(&format!("seed-{:04x}", command.0), &pdu.to_bytes());
        assert_eq!(pdu.command(), command);
        assert_eq!(pdu.header.service_id, command.service());
        assert_eq!(pdu.decode_any().unwrap(), decoded);
    }
}

#[test]
fn required_fields_are_emitted_at_default_values() {
    let schema = schema();
    for &command in CommandId::ALL {
        let message = empty(command);
        let name = format!(".{}", message.full_name());
        assert_exactly_required(&schema, &name, &message.encode_to_vec());
    }
}

#[test]
fn unknown_commands_and_garbage_are_body_errors() {
    for raw in [0u16, 0x0100, 0x070c, 0x0713, 0x0800, 0xffff] {
        let err = AnyMessage::decode(CommandId(raw), &b"\x08\x01"[..]).unwrap_err();
        assert!(
            matches!(err, teamtalk_core::DecodeError::UnknownCommand { command } if command.0 == raw)
        );
    }
    // field 1 announced as length-delimited with 5 bytes, only 1 present
    let err = AnyMessage::decode(CommandId::MSG_DATA, &[0x0a, 0x05, 0x00][..]).unwrap_err();
    assert!(
        matches!(err, teamtalk_core::DecodeError::Malformed { command, .. } if command == CommandId::MSG_DATA)
    );
    assert!(err.to_string().contains("CID_MSG_DATA"), "{err}");
}
