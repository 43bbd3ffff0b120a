fn main() {
    // The build id (cache keys) from the sources: docs/plugin-abi.md, "Build id".
    tomoflow_build_id::emit();
}
