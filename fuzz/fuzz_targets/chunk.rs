//! Chunk decoding: a store message file (`*.msg`) read back, turned into the SDK's `Message`,
//! and decoded as a volume chunk and reassembled, as every volume-consuming plugin does.
//! Corrupt or hostile bytes give an error, never a panic or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use tomoflow::store::msgfile;
use tomoflow_sdk::volume::{chunk_f32, Assembler};
use tomoflow_sdk::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = msgfile::read(data, data.len() as u64) else {
        return;
    };
    let Ok(serde_json::Value::Object(meta)) = serde_json::from_str(&packet.meta) else {
        return;
    };
    let tensors = packet
        .tensors
        .into_iter()
        .filter_map(|(n, t)| Arc::try_unwrap(t).ok().map(|t| (n, t)))
        .collect();
    let msg = Message { meta, tensors };
    if let Ok((meta, voxels)) = chunk_f32(&msg) {
        assert_eq!(voxels.len(), meta.len());
        // The assembler allocates the volume its geometry declares (checked arithmetic,
        // fallible allocation); keep the fuzzer within its memory limit.
        if meta.full_shape.iter().product::<usize>() > 1 << 26 {
            return;
        }
        let mut a = Assembler::<f32>::new();
        if a.add(&msg).is_ok() && a.is_complete() {
            let v = a.finish().expect("complete");
            assert_eq!(v.shape, meta.full_shape);
        }
    }
});
