//! The `image` data kind: one message holding a PNG file's bytes (docs/data-kinds.md).
//!
//! `meta.image` describes the picture (`width`, `height`, and what it shows, e.g. `z`); the u8
//! tensor `png` holds the encoded file, ready to write or to embed in the run report.

use crate::tensor::{Message, Tensor};
use anyhow::anyhow;

/// An `image` message: `png` (the encoded file, `width` × `height` pixels) plus `about`, extra
/// fields for `meta.image` (e.g. `{"z": 24}`: the slice shown).
pub fn image_message(
    png: Vec<u8>,
    width: usize,
    height: usize,
    about: serde_json::Value,
) -> Message {
    let mut info = serde_json::json!({"width": width, "height": height});
    if let (Some(info), serde_json::Value::Object(extra)) = (info.as_object_mut(), about) {
        info.extend(extra);
    }
    let n = png.len();
    let mut meta = serde_json::Map::new();
    meta.insert("image".into(), info);
    Message {
        meta,
        tensors: vec![("png".into(), Tensor::from_vec(png, &[n]))],
    }
}

/// The PNG bytes of an `image` message.
pub fn image_png(msg: &Message) -> anyhow::Result<&[u8]> {
    msg.tensor("png")
        .and_then(|t| t.as_slice::<u8>())
        .map_err(|e| anyhow!("image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_message_round_trips_bytes_and_describes_the_picture() {
        let msg = image_message(vec![137, 80, 78, 71], 3, 2, serde_json::json!({"z": 5}));
        assert_eq!(image_png(&msg).unwrap(), &[137, 80, 78, 71]);
        assert_eq!(
            msg.meta["image"],
            serde_json::json!({"width": 3, "height": 2, "z": 5})
        );
        let empty = Message {
            meta: Default::default(),
            tensors: vec![],
        };
        assert!(image_png(&empty)
            .unwrap_err()
            .to_string()
            .starts_with("image:"));
    }
}
