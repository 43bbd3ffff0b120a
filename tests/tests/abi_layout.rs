//! `include/tomoflow.h` must describe exactly the structs of `crates/sdk/src/abi.rs`: compile
//! a C program that prints the size and alignment of every struct, the offset and size of every
//! field, and the value of every constant as the C compiler sees them, and compare each with
//! Rust's view.

mod common;

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use tomoflow_sdk::abi::*;

/// Size of the type of a field, named by a projection closure.
fn field_size<T, F>(_project: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Rust's view, as "key value" pairs with the keys layout.c prints.
fn rust_layout() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    macro_rules! layout {
        ($t:ident { $($f:ident),* $(,)? }) => {
            m.insert(stringify!($t).to_string(), size_of::<$t>().to_string());
            m.insert(format!("{}@align", stringify!($t)), align_of::<$t>().to_string());
            $(
                m.insert(
                    format!("{}.{}", stringify!($t), stringify!($f)),
                    offset_of!($t, $f).to_string(),
                );
                m.insert(
                    format!("{}.{}#size", stringify!($t), stringify!($f)),
                    field_size(|s: &$t| &s.$f).to_string(),
                );
            )*
        };
    }
    layout!(DLDevice {
        device_type,
        device_id
    });
    layout!(DLDataType { code, bits, lanes });
    layout!(DLTensor {
        data,
        device,
        ndim,
        dtype,
        shape,
        strides,
        byte_offset
    });
    layout!(DLManagedTensor {
        dl_tensor,
        manager_ctx,
        deleter
    });
    layout!(TfNamedTensor { name, tensor });
    layout!(TfHost {
        struct_size,
        abi_major,
        abi_minor,
        alloc_tensor,
        emit,
        log,
        progress,
        cancelled,
        set_error,
        parallel_for,
    });
    layout!(TfNodeInfo {
        node_id,
        instance,
        seed,
        scratch_dir,
        base_dir,
        threads,
        struct_size
    });
    layout!(TfPort { name, kind, doc });
    layout!(TfNodeType {
        name,
        doc,
        inputs,
        n_inputs,
        outputs,
        n_outputs,
        params_schema,
        flags,
        export_extensions,
        check,
        create,
        process,
        finish,
        destroy,
    });
    layout!(TfPluginDescriptor {
        magic,
        abi_major,
        abi_minor,
        struct_size,
        name,
        version,
        build_id,
        description,
        node_types,
        n_node_types,
        node_type_size,
    });
    macro_rules! constant {
        ($($c:ident),*) => { $( m.insert(stringify!($c).to_string(), ($c as u64).to_string()); )* };
    }
    constant!(
        TF_MAGIC,
        TF_ABI_MAJOR,
        TF_ABI_MINOR,
        TF_OK,
        TF_ERR,
        TF_CANCELLED,
        TF_NODE_EXPORTER,
        TF_LOG_ERROR,
        TF_LOG_WARN,
        TF_LOG_INFO,
        TF_LOG_DEBUG,
        DL_INT,
        DL_UINT,
        DL_FLOAT,
        DL_CPU
    );
    m.insert("TF_ENTRY_SYMBOL".into(), TF_ENTRY_SYMBOL.into());
    m
}

/// The C compiler's view, from running tests/c-plugin/layout.c.
fn c_layout() -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("layout");
    let src = common::workspace().join("tests/c-plugin/layout.c");
    common::cc(
        &[
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-o",
            exe.to_str().expect("utf-8 temp path"),
        ],
        &[&src],
    );
    let out = common::run(&mut std::process::Command::new(&exe));
    assert!(
        out.status.success(),
        "layout program failed\n{}",
        common::text(&out)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn magic_spells_tomoflow() {
    assert_eq!(TF_MAGIC, 0x574F_4C46_4F4D_4F54);
    assert_eq!(&TF_MAGIC.to_le_bytes(), b"TOMOFLOW");
}

#[test]
fn header_layout_matches_rust_abi() {
    let rust = rust_layout();
    let c = c_layout();
    let mut problems = Vec::new();
    for (k, rv) in &rust {
        match c.get(k) {
            None => problems.push(format!("{k}: Rust {rv}, missing from the C output")),
            Some(cv) if cv != rv => problems.push(format!("{k}: Rust {rv}, C {cv}")),
            Some(_) => {}
        }
    }
    for k in c.keys() {
        if !rust.contains_key(k) {
            problems.push(format!(
                "{k}: printed by C but not checked on the Rust side"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "include/tomoflow.h and crates/sdk/src/abi.rs disagree:\n  {}",
        problems.join("\n  ")
    );
    // Every struct of abi.rs is covered (10 structs: size + align + fields).
    assert_eq!(rust.keys().filter(|k| k.ends_with("@align")).count(), 10);
}

#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
#[test]
fn x86_64_sizes() {
    // The same numbers are `_Static_assert`ed in tests/c-plugin/layout.c.
    assert_eq!(size_of::<DLTensor>(), 48);
    assert_eq!(size_of::<DLManagedTensor>(), 64);
    assert_eq!(size_of::<TfNamedTensor>(), 16);
    assert_eq!(size_of::<TfHost>(), 72);
    assert_eq!(size_of::<TfNodeInfo>(), 48);
    assert_eq!(size_of::<TfPort>(), 24);
    assert_eq!(size_of::<TfNodeType>(), 112);
    assert_eq!(size_of::<TfPluginDescriptor>(), 72);
}

/// The header compiles cleanly as C99 and as C++, and after a real `dlpack.h` (whose
/// definitions it must then reuse instead of redefining).
#[test]
fn header_compiles_standalone_and_after_dlpack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = dir.path().join("plain.c");
    std::fs::write(
        &plain,
        "#include \"tomoflow.h\"\n#include \"tomoflow.h\"\nint main(void) { return (int)sizeof(TfHost) == 0; }\n",
    )
    .unwrap();
    common::cc(
        &[
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ],
        &[&plain],
    );

    // A stand-in for dlpack.h v0.8 (same guard macros and layout, with its enums).
    let dlpack = dir.path().join("dlpack.h");
    std::fs::write(
        &dlpack,
        r#"#ifndef DLPACK_DLPACK_H_
#define DLPACK_DLPACK_H_
#define DLPACK_VERSION 80
#include <stdint.h>
typedef enum { kDLCPU = 1, kDLCUDA = 2 } DLDeviceType;
typedef struct { DLDeviceType device_type; int32_t device_id; } DLDevice;
typedef enum { kDLInt = 0U, kDLUInt = 1U, kDLFloat = 2U } DLDataTypeCode;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct { void* data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t* shape; int64_t* strides; uint64_t byte_offset; } DLTensor;
typedef struct DLManagedTensor { DLTensor dl_tensor; void * manager_ctx;
  void (*deleter)(struct DLManagedTensor * self); } DLManagedTensor;
#endif
"#,
    )
    .unwrap();
    let after = dir.path().join("after.c");
    std::fs::write(
        &after,
        "#include \"dlpack.h\"\n#include \"tomoflow.h\"\n\
         int main(void) { DLDevice d = {kDLCPU, 0}; TfNamedTensor t = {0, 0}; (void)t; return d.device_type != DL_CPU; }\n",
    )
    .unwrap();
    let inc = format!("-I{}", dir.path().display());
    common::cc(
        &["-std=c99", "-Wall", "-Werror", &inc, "-fsyntax-only"],
        &[&after],
    );

    // C++ (the header has extern "C" guards); only where a C++ compiler is installed as c++.
    let cpp = dir.path().join("plain.cpp");
    std::fs::write(
        &cpp,
        "#include \"tomoflow.h\"\nint main() { return sizeof(TfPluginDescriptor) == 0; }\n",
    )
    .unwrap();
    let root = common::workspace();
    let out = std::process::Command::new("c++")
        .arg(format!("-I{}", root.join("include").display()))
        .args(["-Wall", "-Werror", "-fsyntax-only"])
        .arg(&cpp)
        .output();
    if let Ok(out) = out {
        assert!(
            out.status.success(),
            "tomoflow.h does not compile as C++\n{}",
            common::text(&out)
        );
    }
}
