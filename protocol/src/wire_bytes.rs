//! Lists of byte strings on the wire: each one a postcard byte string (length, then the bytes
//! as one slice) instead of a sequence of `u8`s decoded one by one. Postcard writes both the
//! same way, so this changes no byte of any message; it makes a 1 MB batch of objects one
//! copy per object instead of a million visitor calls (SPEC.md §15.2).

use serde::{Deserialize, Deserializer, Serializer};
use serde_bytes::{ByteBuf, Bytes};

pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|bytes| Bytes::new(bytes)))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
    let list = Vec::<ByteBuf>::deserialize(d)?;
    Ok(list.into_iter().map(ByteBuf::into_vec).collect())
}
