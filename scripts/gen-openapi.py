#!/usr/bin/env python3
"""Writes src/routes/openapi.json, the OpenAPI 3 document of the HTTP API.

Run after changing a route; the test suite checks that every route of the router is documented.
"""
import json
import pathlib

ERROR = {"$ref": "#/components/schemas/Error"}


def err(description):
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def ok(description, schema, media="application/json"):
    return {"description": description, "content": {media: {"schema": schema}}}


TOP_K = {"name": "top_k", "in": "query", "required": False,
         "description": "How many classes to return (1..=num_classes, default 5).",
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5}}
FILENAME = {"name": "filename", "in": "query", "required": False,
            "description": "The image's file name, recorded in the prediction log.",
            "schema": {"type": "string"}}
PREDICT_ERRORS = {
    "400": err("invalid_base64, invalid_image, empty_body, missing_image, invalid_json, "
               "invalid_multipart or invalid_query"),
    "413": err("too_large: the body or the decoded image is over the limits"),
    "415": err("unsupported_media_type"),
    "422": err("invalid_top_k"),
    "503": err("model_unavailable"),
    "500": err("internal"),
}
PREDICT = {
    "summary": "Classify one image",
    "description": "The image arrives as base64 JSON, as a multipart upload (field `file`) or as "
                   "the raw body (`image/*` or `application/octet-stream`). Every successful "
                   "prediction appends one line to the stage's prediction log.",
    "parameters": [TOP_K, FILENAME],
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/PredictJson"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"},
            "top_k": {"type": "integer", "minimum": 1}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }},
    "responses": {"200": ok("The top-k classes", {"$ref": "#/components/schemas/PredictResponse"}),
                  **PREDICT_ERRORS},
}
HEALTH = {
    "summary": "Service health",
    "responses": {"200": ok("The model is loaded", {"$ref": "#/components/schemas/Health"}),
                  "503": ok("The model is not loaded", {"$ref": "#/components/schemas/Health"})},
}
API_KEY = [{"ApiKey": []}]
LIMIT = {"name": "limit", "in": "query", "required": False,
         "description": "Return only the last N prediction lines (default 100, maximum 10000).",
         "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}}

doc = {
    "openapi": "3.0.3",
    "info": {
        "title": "DenseNet121 classification API",
        "version": "0.1.0",
        "description": "ImageNet-1k classification with DenseNet121 (ONNX, tract). Errors are "
                       "JSON `{\"detail\", \"code\"}`.",
    },
    "paths": {
        "/": {"get": {**HEALTH, "operationId": "root"}},
        "/health": {"get": {**HEALTH, "operationId": "health"}},
        "/model-info": {"get": {
            "operationId": "modelInfo", "summary": "The loaded model, as read from its file",
            "responses": {"200": ok("Model description", {"$ref": "#/components/schemas/ModelInfo"}),
                          "503": err("model_unavailable")}}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document",
            "responses": {"200": ok("OpenAPI 3 document", {"type": "object"})}}},
        "/predict": {"post": {**PREDICT, "operationId": "predict"}},
        "/predict-file": {"post": {**PREDICT, "operationId": "predictFile",
                                   "summary": "Classify one image (alias of /predict)"}},
        "/logs/predictions": {
            "get": {"operationId": "getPredictionLog", "summary": "The prediction log, with stats",
                    "security": API_KEY, "parameters": [LIMIT],
                    "responses": {"200": ok("Log text and stats", {"$ref": "#/components/schemas/LogView"}),
                                  "400": err("invalid_query"), "500": err("internal")}},
            "delete": {"operationId": "clearPredictionLog",
                       "summary": "Clear the stage's log (dev stage only)", "security": API_KEY,
                       "responses": {"200": ok("Cleared", {"type": "object", "properties": {
                           "message": {"type": "string"}, "stage": {"type": "string"},
                           "timestamp": {"type": "string", "format": "date-time"}}}),
                           "403": err("forbidden_stage"), "500": err("internal")}},
        },
        "/logs/predictions/download": {"get": {
            "operationId": "downloadPredictionLog", "summary": "The whole log as a text file",
            "security": API_KEY,
            "responses": {"200": ok("predicciones_{stage}.txt", {"type": "string"},
                                    "text/plain; charset=utf-8"),
                          "500": err("internal")}}},
        "/logs/predictions/stats": {"get": {
            "operationId": "predictionLogStats", "summary": "Statistics over the log",
            "security": API_KEY,
            "responses": {"200": ok("Stats", {"$ref": "#/components/schemas/LogStats"}),
                          "500": err("internal")}}},
    },
    "components": {
        "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                                       "description": "Required on /logs/* in the deployed stack; "
                                                      "not checked by the local server."}},
        "schemas": {
            "Error": {"type": "object", "required": ["detail", "code"], "properties": {
                "detail": {"type": "string"}, "code": {"type": "string"}}},
            "PredictJson": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "description": "Base64, or a data: URI"},
                "top_k": {"type": "integer", "minimum": 1},
                "filename": {"type": "string"}}},
            "Prediction": {"type": "object", "properties": {
                "rank": {"type": "integer"}, "class_id": {"type": "integer"},
                "label": {"type": "string"}, "probability": {"type": "number"},
                "confidence": {"type": "string", "example": "85.42%"}}},
            "ModelSummary": {"type": "object", "properties": {
                "name": {"type": "string"},
                "input_shape": {"type": "array", "items": {"type": "integer"}},
                "num_classes": {"type": "integer"}}},
            "PredictResponse": {"type": "object", "properties": {
                "success": {"type": "boolean"}, "filename": {"type": "string"},
                "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
                "inference_time_ms": {"type": "number"},
                "timings_ms": {"type": "object", "properties": {
                    "decode": {"type": "number"}, "preprocess": {"type": "number"},
                    "inference": {"type": "number"}}},
                "model_info": {"$ref": "#/components/schemas/ModelSummary"},
                "request_id": {"type": "string"}}},
            "Health": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["healthy", "unhealthy"]},
                "model_loaded": {"type": "boolean"},
                "model_info": {"allOf": [{"$ref": "#/components/schemas/ModelSummary"}], "nullable": True},
                "stage": {"type": "string", "enum": ["dev", "prod"]},
                "version": {"type": "string"}}},
            "ModelInfo": {"type": "object", "properties": {
                "name": {"type": "string"}, "framework": {"type": "string"},
                "runtime": {"type": "string"}, "input_name": {"type": "string"},
                "input_shape": {"type": "array", "items": {"type": "integer"}},
                "output_name": {"type": "string"}, "num_classes": {"type": "integer"},
                "parameters": {"type": "integer"}, "opset_version": {"type": "integer"},
                "model_file_size": {"type": "integer"}, "model_sha256": {"type": "string"},
                "load_time_ms": {"type": "number"}}},
            "LogStats": {"type": "object", "properties": {
                "total_predictions": {"type": "integer"}, "file_exists": {"type": "boolean"},
                "file_size_bytes": {"type": "integer"},
                "last_prediction": {"type": "object", "nullable": True, "properties": {
                    "timestamp": {"type": "string"}, "filename": {"type": "string"},
                    "top_prediction": {"type": "string"}, "confidence": {"type": "number"}}},
                "stage": {"type": "string"}, "bucket": {"type": "string", "nullable": True},
                "file_key": {"type": "string"},
                "avg_confidence": {"type": "number", "nullable": True},
                "avg_processing_time": {"type": "number", "nullable": True},
                "p50_processing_time": {"type": "number", "nullable": True},
                "p95_processing_time": {"type": "number", "nullable": True},
                "top_classes": {"type": "object", "additionalProperties": {"type": "integer"},
                                "description": "The 10 most frequent top predictions"},
                "log_write_failures": {"type": "integer",
                                       "description": "Prediction lines this process failed "
                                                      "to store since it started"}}},
            "LogView": {"type": "object", "properties": {
                "stage": {"type": "string"}, "content": {"type": "string"},
                "stats": {"$ref": "#/components/schemas/LogStats"}}},
        },
    },
}

out = pathlib.Path(__file__).resolve().parent.parent / "src" / "routes" / "openapi.json"
out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
print(f"wrote {out}")
