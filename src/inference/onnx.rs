//! What every engine reports about an ONNX file, read from the file itself so that the engines
//! describe the same model in the same words.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use prost::Message;
use sha2::{Digest, Sha256};

use super::ModelInfo;

/// Facts read from the ONNX protobuf and the file's bytes, not from an engine's graph.
#[derive(Debug)]
pub(super) struct OnnxFacts {
    pub input_name: String,
    pub output_name: String,
    pub parameters: u64,
    pub opset_version: i64,
    pub file_size: u64,
    pub sha256: String,
}

impl OnnxFacts {
    /// Reads the facts of the ONNX model whose file holds `bytes`. Only the fields the facts
    /// need are decoded (see [`slim`]): the weights are skipped, not copied.
    pub fn read(bytes: &[u8]) -> anyhow::Result<OnnxFacts> {
        let model = slim::Model::decode(bytes).context("the file is not an ONNX model")?;
        let graph = model.graph.context("the ONNX file holds no graph")?;
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
        let opset_version = model
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

    /// The model's description: these facts, plus what the engine that loaded it (`runtime`,
    /// `name`d by the service) found, with the time since loading `started`.
    pub fn into_info(
        self,
        name: &str,
        runtime: String,
        input_shape: Vec<usize>,
        num_classes: usize,
        started: Instant,
    ) -> ModelInfo {
        ModelInfo {
            name: name.to_owned(),
            framework: "ONNX",
            runtime,
            input_name: self.input_name,
            input_shape,
            output_name: self.output_name,
            num_classes,
            parameters: self.parameters,
            opset_version: self.opset_version,
            model_file_size: self.file_size,
            model_sha256: self.sha256,
            load_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// Reads the model file at `path`: its bytes and its facts.
    pub fn load(path: &Path) -> anyhow::Result<(Vec<u8>, OnnxFacts)> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading the model {}", path.display()))?;
        let facts = OnnxFacts::read(&bytes)
            .with_context(|| format!("reading {} as ONNX", path.display()))?;
        Ok((bytes, facts))
    }
}

/// The few fields of ONNX's `ModelProto` (onnx/onnx.proto, same field numbers) that the facts
/// come from. Decoding into these messages skips everything else, the weights included, so it
/// costs a walk over the file instead of a copy of it.
mod slim {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<Graph>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetId>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Graph {
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<Tensor>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfo>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(string, tag = "8")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfo {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetId {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb;

    fn tensor(name: &str, dims: &[i64]) -> pb::TensorProto {
        let count: i64 = dims.iter().product();
        pb::TensorProto {
            name: name.to_owned(),
            dims: dims.to_vec(),
            data_type: 1,
            raw_data: vec![7; count as usize * 4],
            ..Default::default()
        }
    }

    fn value(name: &str) -> pb::ValueInfoProto {
        pb::ValueInfoProto {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    fn opset(domain: &str, version: i64) -> pb::OperatorSetIdProto {
        pb::OperatorSetIdProto {
            domain: domain.to_owned(),
            version,
        }
    }

    #[test]
    fn facts_come_from_the_protobuf_without_the_weights() {
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![opset("ai.onnx.ml", 3), opset("", 17)],
            graph: Some(pb::GraphProto {
                initializer: vec![tensor("w", &[3, 4]), tensor("b", &[5])],
                // Older exporters list initializers among the inputs too.
                input: vec![value("w"), value("x")],
                output: vec![value("y"), value("z")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        let facts = OnnxFacts::read(&bytes).unwrap();
        assert_eq!(facts.input_name, "x");
        assert_eq!(facts.output_name, "y");
        assert_eq!(facts.parameters, 17);
        assert_eq!(facts.opset_version, 17);
        assert_eq!(facts.file_size, bytes.len() as u64);
        assert_eq!(facts.sha256, hex(&Sha256::digest(&bytes)));
    }

    #[test]
    fn what_is_not_an_onnx_model_is_an_error() {
        let error = OnnxFacts::read(b"\x08\x07 not protobuf \xff\xff\xff").unwrap_err();
        assert!(error.to_string().contains("not an ONNX model"), "{error}");
        let no_graph = pb::ModelProto::default().encode_to_vec();
        let error = OnnxFacts::read(&no_graph).unwrap_err();
        assert!(error.to_string().contains("no graph"), "{error}");
        let no_input = pb::ModelProto {
            graph: Some(pb::GraphProto {
                initializer: vec![tensor("w", &[2])],
                input: vec![value("w")],
                output: vec![value("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let error = OnnxFacts::read(&no_input).unwrap_err();
        assert!(error.to_string().contains("no input"), "{error}");
    }
}
