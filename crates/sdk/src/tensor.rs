//! Safe owners of DLPack tensors, and the messages that carry them along an edge.

use crate::abi::{
    DLDataType, DLDevice, DLManagedTensor, DLTensor, DL_CPU, DL_FLOAT, DL_INT, DL_UINT,
};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

/// Element types a tensor may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Unsigned byte.
    U8,
    /// Signed byte.
    I8,
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit.
    I16,
    /// Unsigned 32-bit.
    U32,
    /// Signed 32-bit.
    I32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
}

impl DType {
    /// The DLPack description of this type.
    pub fn to_dl(self) -> DLDataType {
        let (code, bits) = match self {
            DType::F32 => (DL_FLOAT, 32),
            DType::F64 => (DL_FLOAT, 64),
            DType::U8 => (DL_UINT, 8),
            DType::I8 => (DL_INT, 8),
            DType::U16 => (DL_UINT, 16),
            DType::I16 => (DL_INT, 16),
            DType::U32 => (DL_UINT, 32),
            DType::I32 => (DL_INT, 32),
            DType::U64 => (DL_UINT, 64),
            DType::I64 => (DL_INT, 64),
        };
        DLDataType {
            code,
            bits,
            lanes: 1,
        }
    }

    /// The type a DLPack description names, if tomoflow supports it.
    pub fn from_dl(dt: DLDataType) -> Option<DType> {
        if dt.lanes != 1 {
            return None;
        }
        Some(match (dt.code, dt.bits) {
            (DL_FLOAT, 32) => DType::F32,
            (DL_FLOAT, 64) => DType::F64,
            (DL_UINT, 8) => DType::U8,
            (DL_INT, 8) => DType::I8,
            (DL_UINT, 16) => DType::U16,
            (DL_INT, 16) => DType::I16,
            (DL_UINT, 32) => DType::U32,
            (DL_INT, 32) => DType::I32,
            (DL_UINT, 64) => DType::U64,
            (DL_INT, 64) => DType::I64,
            _ => return None,
        })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        self.to_dl().bits as usize / 8
    }

    /// Short lowercase name (`"f32"`, `"u16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::U64 => "u64",
            DType::I64 => "i64",
        }
    }
}

/// Rust types that can be tensor elements.
pub trait Element: Copy + Send + Sync + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
}
macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: DType = DType::$d; })* };
}
element!(f32 => F32, f64 => F64, u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64, i64 => I64);

/// An owned, immutable DLPack tensor. Dropping it calls the DLPack deleter.
///
/// Tensors that arrive from the host may be shared with other nodes (fan-out never copies),
/// so their data is read-only. Build outputs with [`Tensor::from_vec`].
pub struct Tensor {
    raw: NonNull<DLManagedTensor>,
}

// The data behind a tensor is immutable once wrapped, and DLPack deleters must be callable
// from any thread (documented in docs/plugin-abi.md).
unsafe impl Send for Tensor {}
unsafe impl Sync for Tensor {}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} {:?})", self.dtype(), self.shape())
    }
}

struct VecOwner<T> {
    _data: Vec<T>,
    shape: Vec<i64>,
}

unsafe extern "C" fn delete_vec<T>(p: *mut DLManagedTensor) {
    if p.is_null() {
        return;
    }
    let managed = Box::from_raw(p);
    drop(Box::from_raw(managed.manager_ctx as *mut VecOwner<T>));
}

struct SharedOwner {
    _tensor: Arc<Tensor>,
    shape: Vec<i64>,
}

unsafe extern "C" fn delete_shared(p: *mut DLManagedTensor) {
    if p.is_null() {
        return;
    }
    let managed = Box::from_raw(p);
    drop(Box::from_raw(managed.manager_ctx as *mut SharedOwner));
}

impl Tensor {
    /// Wrap a vector as a C-order tensor of the given shape, without copying.
    ///
    /// Panics if the shape's product differs from the vector's length.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            data.len(),
            "tensor shape {shape:?} does not match {} elements",
            data.len()
        );
        let mut owner = Box::new(VecOwner {
            _data: data,
            shape: shape.iter().map(|&s| s as i64).collect(),
        });
        let data_ptr = owner._data.as_mut_ptr() as *mut c_void;
        let shape_ptr = owner.shape.as_mut_ptr();
        let managed = Box::new(DLManagedTensor {
            dl_tensor: DLTensor {
                data: data_ptr,
                device: DLDevice {
                    device_type: DL_CPU,
                    device_id: 0,
                },
                ndim: shape.len() as i32,
                dtype: T::DTYPE.to_dl(),
                shape: shape_ptr,
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            },
            manager_ctx: Box::into_raw(owner) as *mut c_void,
            deleter: Some(delete_vec::<T>),
        });
        Tensor {
            raw: NonNull::new(Box::into_raw(managed)).expect("box is non-null"),
        }
    }

    /// Take ownership of a raw managed tensor. Returns `None` for null.
    ///
    /// # Safety
    /// `p` must point to a valid `DLManagedTensor` that nobody else will delete.
    pub unsafe fn from_raw(p: *mut DLManagedTensor) -> Option<Tensor> {
        NonNull::new(p).map(|raw| Tensor { raw })
    }

    /// Give up ownership: the receiver must call the deleter.
    pub fn into_raw(self) -> *mut DLManagedTensor {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }

    /// A new owned handle to the same data, keeping `this` alive until the handle is deleted.
    /// This is how one emitted chunk reaches several consumers without a copy.
    pub fn share(this: &Arc<Tensor>) -> *mut DLManagedTensor {
        let dl = this.dl();
        let mut owner = Box::new(SharedOwner {
            _tensor: Arc::clone(this),
            shape: this.shape().to_vec(),
        });
        let shape_ptr = owner.shape.as_mut_ptr();
        let managed = Box::new(DLManagedTensor {
            dl_tensor: DLTensor {
                data: dl.data,
                device: dl.device,
                ndim: dl.ndim,
                dtype: dl.dtype,
                shape: shape_ptr,
                strides: std::ptr::null_mut(),
                byte_offset: dl.byte_offset,
            },
            manager_ctx: Box::into_raw(owner) as *mut c_void,
            deleter: Some(delete_shared),
        });
        Box::into_raw(managed)
    }

    fn dl(&self) -> &DLTensor {
        unsafe { &self.raw.as_ref().dl_tensor }
    }

    /// Element type, or `None` for a DLPack type tomoflow does not support.
    pub fn dtype_checked(&self) -> Option<DType> {
        DType::from_dl(self.dl().dtype)
    }

    /// Element type. Panics on unsupported types; tensors that crossed the host were checked.
    pub fn dtype(&self) -> DType {
        self.dtype_checked().expect("unsupported DLPack dtype")
    }

    /// Extents, slowest-varying first.
    pub fn shape(&self) -> &[i64] {
        let dl = self.dl();
        if dl.ndim <= 0 || dl.shape.is_null() {
            return &[];
        }
        unsafe { std::slice::from_raw_parts(dl.shape, dl.ndim as usize) }
    }

    /// Extents as `usize`.
    pub fn dims(&self) -> Vec<usize> {
        self.shape().iter().map(|&s| s.max(0) as usize).collect()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().map(|&s| s.max(0) as usize).product()
    }

    /// True when the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the tensor lives in CPU memory in compact C order.
    pub fn is_compact_cpu(&self) -> bool {
        let dl = self.dl();
        if dl.device.device_type != DL_CPU {
            return false;
        }
        if dl.strides.is_null() {
            return true;
        }
        let strides = unsafe { std::slice::from_raw_parts(dl.strides, dl.ndim as usize) };
        let mut expect = 1i64;
        for (s, n) in strides.iter().zip(self.shape()).rev() {
            if *n > 1 && *s != expect {
                return false;
            }
            expect *= n;
        }
        true
    }

    /// The raw bytes of a compact CPU tensor.
    pub fn bytes(&self) -> &[u8] {
        assert!(self.is_compact_cpu(), "tensor is not a compact CPU tensor");
        let dl = self.dl();
        let n = self.len() * self.dtype().size();
        if n == 0 {
            return &[];
        }
        unsafe {
            std::slice::from_raw_parts((dl.data as *const u8).add(dl.byte_offset as usize), n)
        }
    }

    /// Typed view of the elements, or an error naming both types.
    pub fn as_slice<T: Element>(&self) -> Result<&[T], String> {
        if self.dtype() != T::DTYPE {
            return Err(format!(
                "expected a tensor of {}, got {}",
                T::DTYPE.name(),
                self.dtype().name()
            ));
        }
        let b = self.bytes();
        if b.is_empty() {
            return Ok(&[]);
        }
        if !(b.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
            return Err("tensor data is not aligned for its element type".into());
        }
        Ok(unsafe { std::slice::from_raw_parts(b.as_ptr() as *const T, self.len()) })
    }

    /// Mutable typed view of a freshly allocated tensor (see [`crate::Ctx::alloc`]).
    ///
    /// # Safety
    /// Only valid while this handle is the sole owner of the data, i.e. before it is emitted.
    pub unsafe fn as_mut_slice_unchecked<T: Element>(&mut self) -> &mut [T] {
        assert_eq!(self.dtype(), T::DTYPE);
        let dl = self.dl();
        std::slice::from_raw_parts_mut(
            (dl.data as *mut u8).add(dl.byte_offset as usize) as *mut T,
            self.len(),
        )
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        unsafe {
            let p = self.raw.as_ptr();
            if let Some(del) = (*p).deleter {
                del(p);
            }
        }
    }
}

/// One item on an edge: a JSON object of metadata plus named tensors.
///
/// Volume chunks put their geometry in `meta` (see [`crate::volume::ChunkMeta`]) and the voxels in
/// a tensor named `"data"`; tables and metrics may be pure JSON.
#[derive(Debug, Default)]
pub struct Message {
    /// JSON object with the message's metadata.
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// Named tensors, in order.
    pub tensors: Vec<(String, Tensor)>,
}

impl Message {
    /// A message with metadata only.
    pub fn json(meta: serde_json::Value) -> Message {
        let meta = match meta {
            serde_json::Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        Message {
            meta,
            tensors: Vec::new(),
        }
    }

    /// Add a tensor (builder style).
    pub fn with_tensor(mut self, name: &str, t: Tensor) -> Message {
        self.tensors.push((name.to_string(), t));
        self
    }

    /// The tensor of that name, or an error listing those present.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, String> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                let names: Vec<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
                format!("message has no tensor {name:?} (it has {names:?})")
            })
    }

    /// Total bytes of tensor data.
    pub fn nbytes(&self) -> usize {
        self.tensors
            .iter()
            .map(|(_, t)| t.len() * t.dtype().size())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_roundtrip_and_share() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_slice::<f32>().unwrap()[4], 5.0);
        assert!(t.as_slice::<u8>().is_err());
        let arc = Arc::new(t);
        let raw = Tensor::share(&arc);
        let view = unsafe { Tensor::from_raw(raw) }.unwrap();
        assert_eq!(Arc::strong_count(&arc), 2);
        assert_eq!(
            view.as_slice::<f32>().unwrap(),
            arc.as_slice::<f32>().unwrap()
        );
        assert_eq!(
            view.bytes().as_ptr(),
            arc.bytes().as_ptr(),
            "sharing must not copy"
        );
        drop(view);
        assert_eq!(Arc::strong_count(&arc), 1);
    }
}
