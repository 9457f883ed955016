# The Lambda container image of densenet-api: the binary as the custom-runtime bootstrap
# and the DenseNet121 ONNX model under /opt/model.
#
# Built by `sam build` (template.yaml passes ModelImageUri as MODEL_IMAGE), or by hand:
#   docker build --build-arg MODEL_IMAGE=<acct>.dkr.ecr.<region>.amazonaws.com/densenet121-model-dev@sha256:... .
#   docker build .    # MODEL_IMAGE defaults to local-model: the model comes from ./models/
#
# Works with both the BuildKit and the classic builder (`sam build` talks to the Docker API
# without BuildKit), so no cache mounts and no heredocs.

# The Rust toolchain release; the crate's rust-version is the floor.
ARG RUST_VERSION=1.95
# ONNX Runtime for ENGINE=onnxruntime: the libonnxruntime.so of the onnxruntime wheel on PyPI, the
# version the tests run against (requirements-test.txt).
ARG ONNXRUNTIME_VERSION=1.32.0
# Where the model comes from: an image holding /model/densenet121_Opset17.onnx, normally the
# digest-pinned URI printed by setup-model-repo.sh, or `local-model` (the stage below).
ARG MODEL_IMAGE=local-model

# The toolchain comes from the official Rust image (see the build stage).
FROM rust:${RUST_VERSION}-slim AS toolchain

# A skeleton of the crate for the dependency layer: the manifest, the lock file, a stub build
# script (so build-dependencies are cached too) and a stub file for every target the manifest
# names, so that cargo can load it. It changes only when Cargo.toml or Cargo.lock do.
FROM toolchain AS skeleton
WORKDIR /skeleton
COPY Cargo.toml Cargo.lock ./
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN mkdir -p src \
 && echo 'fn main() {}' > build.rs \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && awk '/^\[\[(bin|bench|test|example)\]\]/ { kind = $0; gsub(/[][[:space:]]/, "", kind); next } \
         /^\[/ { kind = "" } \
         kind == "" || !/^[[:space:]]*(name|path)[[:space:]]*=/ { next } \
         { split($0, q, "\""); key = $0; sub(/[[:space:]]*=.*/, "", key); gsub(/[[:space:]]/, "", key) } \
         key == "path" { print q[2] } \
         key == "name" { dir = (kind == "bin") ? "src/bin" : (kind == "bench") ? "benches" : (kind "s"); \
                         print dir "/" q[2] ".rs" }' Cargo.toml \
    | while read -r stub; do mkdir -p "$(dirname "$stub")"; echo 'fn main() {}' > "$stub"; done

# The ONNX Runtime library, unpacked from its wheel. The library does not depend on the Python
# version; only the wheel's name does.
FROM python:3.12-slim AS onnxruntime
ARG ONNXRUNTIME_VERSION
WORKDIR /wheel
RUN pip download --no-cache-dir --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --python-version 3.12 "onnxruntime==${ONNXRUNTIME_VERSION}" \
 && python -m zipfile -e onnxruntime-*.whl unpacked \
 && mkdir -p /opt/lib \
 && cp "unpacked/onnxruntime/capi/libonnxruntime.so.${ONNXRUNTIME_VERSION}" /opt/lib/libonnxruntime.so

# Build on Amazon Linux 2023, the runtime's own distribution (SAM's build image for
# provided.al2023: AL2023 with gcc and binutils). A binary linked against a newer glibc (Debian
# bookworm has 2.36, trixie 2.41) can require symbols that AL2023's glibc 2.34 lacks and then
# fails at start-up in Lambda; linking against 2.34 itself rules that out. The rustup
# toolchain binaries need only glibc 2.17, so they run here unchanged.
FROM public.ecr.aws/sam/build-provided.al2023:latest-x86_64 AS build
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH \
    CARGO_TERM_COLOR=never
COPY --from=toolchain /usr/local/rustup /usr/local/rustup
COPY --from=toolchain /usr/local/cargo /usr/local/cargo
WORKDIR /build

# Dependencies first, in their own layer, built from the skeleton.
COPY --from=skeleton /skeleton ./
RUN cargo build --profile dist --locked --features onnxruntime \
 && rm -rf build.rs src benches tests examples

# The crate itself. Its dependency-layer fingerprints are dropped so that cargo rebuilds it
# even where a copied file is older than the stub build.
COPY . .
RUN rm -rf target/dist/.fingerprint/densenet-api-* \
 && cargo build --profile dist --locked --features onnxruntime --bin densenet-api \
 && target/dist/densenet-api --help > /dev/null

# The C++ runtime libonnxruntime.so links against, from this same distribution: the Lambda base
# image is minimal and may lack it. /opt/lib is on Lambda's LD_LIBRARY_PATH after the system's
# directories, so a system copy wins where there is one.
RUN mkdir -p /build/lib \
 && for lib in libstdc++.so.6 libgcc_s.so.1; do cp -L "$(gcc -print-file-name="$lib")" /build/lib/; done

# The model from the local checkout: `--build-arg MODEL_IMAGE=local-model` (the default).
# Cargo.toml is listed only so that the COPY has a source when models/ holds no model (an
# unmatched wildcard alone fails the classic builder); the final stage then reports the
# missing /model/densenet121_Opset17.onnx.
FROM scratch AS local-model
COPY Cargo.toml models/densenet121_Opset17.onn[x] /model/

# The model stage: the ECR model image (FROM scratch, /model/densenet121_Opset17.onnx), or the
# stage above.
FROM ${MODEL_IMAGE} AS model

# The tract engine's prepared model: the graph work every cold start would otherwise repeat
# (parse, type, declutter), done once here; the function loads it through PREPARED_MODEL_PATH.
FROM build AS prepared
COPY --from=model /model/densenet121_Opset17.onnx /prepare/densenet121_Opset17.onnx
RUN target/dist/densenet-api prepare-model --model /prepare/densenet121_Opset17.onnx \
        --out /prepare/densenet121_Opset17.nnef.tar

FROM public.ecr.aws/lambda/provided:al2023
COPY --from=build /build/target/dist/densenet-api /var/runtime/bootstrap
COPY --from=build /build/lib/ /opt/lib/
COPY --from=onnxruntime /opt/lib/libonnxruntime.so /opt/lib/libonnxruntime.so
COPY --from=model /model/densenet121_Opset17.onnx /opt/model/densenet121_Opset17.onnx
COPY --from=prepared /prepare/densenet121_Opset17.nnef.tar /opt/model/densenet121_Opset17.nnef.tar
ENV MODEL_PATH=/opt/model/densenet121_Opset17.onnx \
    PREPARED_MODEL_PATH=/opt/model/densenet121_Opset17.nnef.tar \
    ORT_DYLIB_PATH=/opt/lib/libonnxruntime.so
# The base image's entrypoint runs /var/runtime/bootstrap and wants one argument, the handler
# name, which a custom runtime ignores.
CMD ["bootstrap"]
