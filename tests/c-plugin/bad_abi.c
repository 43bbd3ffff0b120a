/*
 * bad_abi.c: a plugin descriptor built for a future ABI major (99). The host must refuse it
 * with a message telling the user to rebuild; tests/tests/c_plugin.rs checks that.
 */
#include "tomoflow.h"

static const TfPluginDescriptor DESCRIPTOR = {
    TF_MAGIC,
    99, /* abi_major: not what this host speaks */
    0,
    (uint32_t)sizeof(TfPluginDescriptor),
    "bad-abi",
    "0.1.0",
    "",
    "A plugin built for ABI 99",
    (const TfNodeType *)0,
    0,
    0,
};

const TfPluginDescriptor *tomoflow_plugin_descriptor(void) { return &DESCRIPTOR; }
