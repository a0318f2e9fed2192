//! The on-disk format of the agent's JSON records: pretty JSON that stays readable with
//! `jq`, sealed by a last line `"checksum": "crc32:<8 hex digits>"` over every byte before
//! it. A torn write, a flipped bit or a hand edit is detected; so is anything that is not
//! a JSON object, has no `version`, has one this agent does not know, or does not match
//! the types. Damage is reported as a reason, never a panic, never "empty".
//!
//! CRC-32 rather than a cryptographic hash: it guards against accidents (SD cards, torn
//! writes, editors), not against someone who can write the state directory, and it
//! catches every single-bit error and every burst up to 32 bits. Twenty lines here
//! instead of a new dependency.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const KEY: &str = "checksum";
const HEAD: &[u8] = b",\n  \"checksum\": \"crc32:";
const TAIL: &[u8] = b"\"\n}\n";
const HEX: usize = 8;

/// The rules of one record: which `version` this agent writes, and which older version
/// it still reads without a checksum (the format before checksums), with the keys such a
/// file always has.
pub struct Rules {
    pub what: &'static str,
    pub version: u32,
    pub unsealed: Option<(u32, &'static [&'static str])>,
}

/// Pretty JSON of `value` (a struct with at least one field) with the checksum line.
pub fn encode(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    if !bytes.ends_with(b"\n}") {
        return Err(serde::ser::Error::custom(
            "only a non-empty object can be sealed",
        ));
    }
    bytes.truncate(bytes.len() - 2);
    let sum = crc32(&bytes);
    bytes.extend_from_slice(HEAD);
    bytes.extend_from_slice(format!("{sum:08x}").as_bytes());
    bytes.extend_from_slice(TAIL);
    Ok(bytes)
}

/// Reads a record, or says what is wrong with it (the damage).
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    rules: &Rules,
) -> Result<T, crate::failure::Invalid> {
    decode_words(bytes, rules).map_err(crate::failure::Invalid)
}

/// [`decode`], its problem in words.
fn decode_words<T: DeserializeOwned>(bytes: &[u8], rules: &Rules) -> Result<T, String> {
    let sealed = match seal_of(bytes) {
        Seal::Valid => true,
        Seal::Absent => false,
        Seal::Mismatch { stored, computed } => {
            return Err(format!(
                "checksum mismatch (stored crc32 {stored}, content gives {computed:08x}): a torn write, a flipped bit or a hand edit"
            ))
        }
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(mut object) = value else {
        return Err(format!("not a JSON object but {}", kind_of(&value)));
    };
    let version = match object.get("version") {
        None => return Err("has no `version`".into()),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("`version` {n} is not a version number"))?,
        Some(other) => return Err(format!("`version` is {}, not a number", kind_of(other))),
    };
    if version > rules.version as u64 {
        return Err(format!(
            "written by a newer agent ({} version {version}; this agent reads up to {})",
            rules.what, rules.version
        ));
    }
    match (sealed, rules.unsealed) {
        (true, _) if version == rules.version as u64 => {}
        (false, Some((old, keys))) if version == old as u64 => {
            if let Some(missing) = keys.iter().find(|k| !object.contains_key(**k)) {
                return Err(format!(
                    "version {old} without `{missing}`: not a file this agent wrote"
                ));
            }
        }
        (false, _) => {
            return Err(format!(
                "no checksum line at the end ({} version {version}): torn, truncated or edited",
                rules.what
            ))
        }
        (true, _) => return Err(format!("unknown {} version {version}", rules.what)),
    }
    object.remove(KEY);
    T::deserialize(Value::Object(object))
        .map_err(|e| format!("does not match the {} format ({e})", rules.what))
}

enum Seal {
    Valid,
    Absent,
    Mismatch { stored: String, computed: u32 },
}

fn seal_of(bytes: &[u8]) -> Seal {
    let len = HEAD.len() + HEX + TAIL.len();
    if bytes.len() < len {
        return Seal::Absent;
    }
    let (body, trailer) = bytes.split_at(bytes.len() - len);
    let Some(hex) = trailer
        .strip_prefix(HEAD)
        .and_then(|rest| rest.strip_suffix(TAIL))
    else {
        return Seal::Absent;
    };
    let computed = crc32(body);
    let stored = String::from_utf8_lossy(hex).into_owned();
    match u32::from_str_radix(&stored, 16) {
        Ok(sum) if sum == computed && stored.bytes().all(|b| b.is_ascii_hexdigit()) => Seal::Valid,
        _ => Seal::Mismatch { stored, computed },
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// CRC-32 (IEEE 802.3, as zlib and PNG), table built at compile time.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        version: u32,
        items: Vec<String>,
    }

    const RULES: Rules = Rules {
        what: "test",
        version: 2,
        unsealed: Some((1, &["items"])),
    };

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_is_json_with_a_checksum_line() {
        let rec = Rec {
            version: 2,
            items: vec!["a".into()],
        };
        let bytes = encode(&rec).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let sum = crc32(&bytes[..bytes.len() - (HEAD.len() + HEX + TAIL.len())]);
        assert!(
            text.ends_with(&format!("]\n,\n  \"checksum\": \"crc32:{sum:08x}\"\n}}\n"))
                || text.ends_with(&format!("],\n  \"checksum\": \"crc32:{sum:08x}\"\n}}\n")),
            "{text}"
        );
        let plain: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(plain["items"][0], "a");
        assert_eq!(decode::<Rec>(&bytes, &RULES).unwrap(), rec);
    }

    #[test]
    fn damage_is_named() {
        let good = encode(&Rec {
            version: 2,
            items: vec!["a".into()],
        })
        .unwrap();
        let mut flipped = good.clone();
        flipped[5] ^= 0x01;
        let cases: &[(&[u8], &str)] = &[
            (b"", "not valid JSON"),
            (b"{}", "has no `version`"),
            (b"[]", "not a JSON object but an array"),
            (b"null", "not a JSON object but null"),
            (
                b"{\"version\": \"2\"}",
                "`version` is a string, not a number",
            ),
            (b"{\"version\": -1}", "`version` -1 is not a version number"),
            (
                b"{\"version\": 9, \"items\": []}",
                "written by a newer agent (test version 9; this agent reads up to 2)",
            ),
            (
                b"{\"version\": 2, \"items\": []}",
                "no checksum line at the end (test version 2)",
            ),
            (b"{\"version\": 1}", "version 1 without `items`"),
            (
                b"{\"version\": 1, \"items\": 3}",
                "does not match the test format (invalid type: integer `3`",
            ),
            (&good[..good.len() - 1], "no checksum line"),
            (&flipped, "checksum mismatch"),
        ];
        for (bytes, want) in cases {
            let got = decode::<Rec>(bytes, &RULES).unwrap_err().0;
            assert!(
                got.contains(want),
                "{:?}: got {got:?}, want {want:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn the_old_unsealed_version_is_read() {
        let rec: Rec = decode(b"{\"version\": 1, \"items\": [\"x\"]}", &RULES).unwrap();
        assert_eq!(rec.items, ["x"]);
    }

    #[test]
    fn a_sealed_file_of_the_old_version_is_damage() {
        let bytes = encode(&Rec {
            version: 1,
            items: vec![],
        })
        .unwrap();
        assert_eq!(
            decode::<Rec>(&bytes, &RULES).unwrap_err().0,
            "unknown test version 1"
        );
    }
}
