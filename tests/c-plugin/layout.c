/*
 * layout.c: prints the size and alignment of every struct in tomoflow.h, the offset and size
 * of every field, and the value of every constant, one "key value" per line.
 * tests/tests/abi_layout.rs compiles and runs it, and compares each line with what Rust
 * reports for crates/sdk/src/abi.rs.
 */
#include "tomoflow.h"

#include <stddef.h>
#include <stdio.h>

#define SIZE(T)                                                                    \
    printf("%s %zu\n", #T, sizeof(T));                                             \
    printf("%s@align %zu\n", #T, (size_t)_Alignof(T))
#define OFF(T, f)                                                                  \
    printf("%s.%s %zu\n", #T, #f, offsetof(T, f));                                 \
    printf("%s.%s#size %zu\n", #T, #f, sizeof(((T *)0)->f))
#define CONST(c) printf("%s %llu\n", #c, (unsigned long long)(c))

#if defined(__x86_64__) && defined(__LP64__)
/* The values for x86-64 Linux, also checked against Rust by abi_layout.rs. */
_Static_assert(sizeof(DLDevice) == 8, "DLDevice");
_Static_assert(sizeof(DLDataType) == 4, "DLDataType");
_Static_assert(sizeof(DLTensor) == 48, "DLTensor");
_Static_assert(sizeof(DLManagedTensor) == 64, "DLManagedTensor");
_Static_assert(offsetof(DLManagedTensor, deleter) == 56, "DLManagedTensor.deleter");
_Static_assert(sizeof(TfNamedTensor) == 16, "TfNamedTensor");
_Static_assert(sizeof(TfHost) == 72, "TfHost");
_Static_assert(offsetof(TfHost, parallel_for) == 64, "TfHost.parallel_for");
_Static_assert(sizeof(TfNodeInfo) == 48, "TfNodeInfo");
_Static_assert(sizeof(TfPort) == 24, "TfPort");
_Static_assert(sizeof(TfNodeType) == 112, "TfNodeType");
_Static_assert(offsetof(TfNodeType, check) == 72, "TfNodeType.check");
_Static_assert(sizeof(TfPluginDescriptor) == 72, "TfPluginDescriptor");
_Static_assert(offsetof(TfPluginDescriptor, n_node_types) == 64, "TfPluginDescriptor.n_node_types");
#endif

int main(void) {
    SIZE(DLDevice);
    OFF(DLDevice, device_type);
    OFF(DLDevice, device_id);

    SIZE(DLDataType);
    OFF(DLDataType, code);
    OFF(DLDataType, bits);
    OFF(DLDataType, lanes);

    SIZE(DLTensor);
    OFF(DLTensor, data);
    OFF(DLTensor, device);
    OFF(DLTensor, ndim);
    OFF(DLTensor, dtype);
    OFF(DLTensor, shape);
    OFF(DLTensor, strides);
    OFF(DLTensor, byte_offset);

    SIZE(DLManagedTensor);
    OFF(DLManagedTensor, dl_tensor);
    OFF(DLManagedTensor, manager_ctx);
    OFF(DLManagedTensor, deleter);

    SIZE(TfNamedTensor);
    OFF(TfNamedTensor, name);
    OFF(TfNamedTensor, tensor);

    SIZE(TfHost);
    OFF(TfHost, struct_size);
    OFF(TfHost, abi_major);
    OFF(TfHost, abi_minor);
    OFF(TfHost, alloc_tensor);
    OFF(TfHost, emit);
    OFF(TfHost, log);
    OFF(TfHost, progress);
    OFF(TfHost, cancelled);
    OFF(TfHost, set_error);
    OFF(TfHost, parallel_for);

    SIZE(TfNodeInfo);
    OFF(TfNodeInfo, node_id);
    OFF(TfNodeInfo, instance);
    OFF(TfNodeInfo, seed);
    OFF(TfNodeInfo, scratch_dir);
    OFF(TfNodeInfo, base_dir);
    OFF(TfNodeInfo, threads);
    OFF(TfNodeInfo, struct_size);

    SIZE(TfPort);
    OFF(TfPort, name);
    OFF(TfPort, kind);
    OFF(TfPort, doc);

    SIZE(TfNodeType);
    OFF(TfNodeType, name);
    OFF(TfNodeType, doc);
    OFF(TfNodeType, inputs);
    OFF(TfNodeType, n_inputs);
    OFF(TfNodeType, outputs);
    OFF(TfNodeType, n_outputs);
    OFF(TfNodeType, params_schema);
    OFF(TfNodeType, flags);
    OFF(TfNodeType, export_extensions);
    OFF(TfNodeType, check);
    OFF(TfNodeType, create);
    OFF(TfNodeType, process);
    OFF(TfNodeType, finish);
    OFF(TfNodeType, destroy);

    SIZE(TfPluginDescriptor);
    OFF(TfPluginDescriptor, magic);
    OFF(TfPluginDescriptor, abi_major);
    OFF(TfPluginDescriptor, abi_minor);
    OFF(TfPluginDescriptor, struct_size);
    OFF(TfPluginDescriptor, name);
    OFF(TfPluginDescriptor, version);
    OFF(TfPluginDescriptor, build_id);
    OFF(TfPluginDescriptor, description);
    OFF(TfPluginDescriptor, node_types);
    OFF(TfPluginDescriptor, n_node_types);
    OFF(TfPluginDescriptor, node_type_size);

    CONST(TF_MAGIC);
    CONST(TF_ABI_MAJOR);
    CONST(TF_ABI_MINOR);
    CONST(TF_OK);
    CONST(TF_ERR);
    CONST(TF_CANCELLED);
    CONST(TF_NODE_EXPORTER);
    CONST(TF_LOG_ERROR);
    CONST(TF_LOG_WARN);
    CONST(TF_LOG_INFO);
    CONST(TF_LOG_DEBUG);
    CONST(DL_INT);
    CONST(DL_UINT);
    CONST(DL_FLOAT);
    CONST(DL_CPU);
    printf("TF_ENTRY_SYMBOL %s\n", TF_ENTRY_SYMBOL);
    return 0;
}
