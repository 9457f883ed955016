//! What every engine reports about an ONNX file, read from the file itself so that the engines
//! describe the same model in the same words.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::Framework;

/// Facts read from the ONNX protobuf and the file's bytes, not from an engine's graph.
pub(super) struct OnnxFacts {
    pub input_name: String,
    pub output_name: String,
    pub parameters: u64,
    pub opset_version: i64,
    pub file_size: u64,
    pub sha256: String,
}

impl OnnxFacts {
    /// Reads the facts of an already parsed model whose file held `bytes`.
    pub fn read(proto: &ModelProto, bytes: &[u8]) -> anyhow::Result<OnnxFacts> {
        let graph = proto
            .graph
            .as_ref()
            .context("the ONNX file holds no graph")?;
        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let input_name = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .find(|name| !initializers.contains(name))
            .context("the model has no input")?
            .to_owned();
        let output_name = graph
            .output
            .first()
            .context("the model has no output")?
            .name
            .clone();
        let parameters = graph
            .initializer
            .iter()
            .map(|t| t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>())
            .sum();
        let opset_version = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version);
        Ok(OnnxFacts {
            input_name,
            output_name,
            parameters,
            opset_version,
            file_size: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
        })
    }

    /// Reads the model file at `path`: its bytes, its parsed protobuf and the facts.
    pub fn load(path: &Path) -> anyhow::Result<(Vec<u8>, ModelProto, OnnxFacts)> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading the model {}", path.display()))?;
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut bytes.as_slice())
            .with_context(|| format!("parsing {} as ONNX", path.display()))?;
        let facts = OnnxFacts::read(&proto, &bytes)?;
        Ok((bytes, proto, facts))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
