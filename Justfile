# The same commands CI runs (.ci/run); `just` is optional, the commands work on their own.
default: check

# Format, lint, test: what CI runs.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets --locked -- -D warnings
    cargo test --locked

demo:
    cargo run --release -- demo

ci:
    bash .ci/run

# The benchmark suite (README "Performance"); `just bench --size tiny` for a smoke run.
bench *ARGS:
    cargo run --release -- bench {{ARGS}}
