//! The artifact formats the Spin shim (containerd-shim-spin) runs, their
//! media types (shared by the resolver and `spindle push`), and the pure
//! classification of manifests.
//!
//! 1. [`ImageFormat::SpinRegistryPush`]: what `spin registry push` produces.
//!    Layers are `application/vnd.wasm.content.layer.v1+wasm` (components),
//!    `…layer.v1+data` (static files), `…bundle.v1.tar+gzip` (file archives)
//!    and the locked app as a layer of type
//!    `application/vnd.fermyon.spin.application.v1+config`; the config is an
//!    OCI image config with `os: wasip1`, `architecture: wasm`. Older Spin
//!    versions put the locked app in the manifest's config instead; both are
//!    recognized.
//! 2. [`ImageFormat::WasmComponent`]: a single `application/wasm` layer, as
//!    `wkg oci push` produces (config `application/vnd.wasm.config.v0+json`).
//! 3. [`ImageFormat::SpinImage`]: a plain image (tar layers) whose platform is
//!    WASI (`os` `wasi`/`wasip1`/`wasip2` or `architecture` `wasm`) and which
//!    holds `/spin.toml`. Finding `/spin.toml` means reading tar layers; this
//!    is bounded (see [`ScanLimits`]): layers above the per-layer cap, past
//!    the total cap or compressed with anything but gzip are not read, and
//!    the rejection message says so.

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest type the resolver accepts (the `Accept` header).
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// OCI image config.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Config of a `wkg oci push` component.
pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";

/// A Spin component (or component dependency) in the `spin registry push` format.
pub const WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// A static file in the `spin registry push` format.
pub const DATA_LAYER: &str = "application/vnd.wasm.content.layer.v1+data";
/// A gzipped tar of a component's static files in the `spin registry push` format.
pub const ARCHIVE_LAYER: &str = "application/vnd.wasm.content.bundle.v1.tar+gzip";
/// The locked app (`spin.json`), a layer in the `spin registry push` format.
pub const SPIN_LOCKED_APP: &str = "application/vnd.fermyon.spin.application.v1+config";
/// A single Wasm component (`wkg oci push`).
pub const WASM_COMPONENT: &str = "application/wasm";
/// Image config label holding the locked app layer's digest (`spin registry push`).
pub const LOCKED_APP_DIGEST_LABEL: &str = "com.fermyon.spin.lockedAppDigest";

/// Plain image layers that can be scanned for `/spin.toml`.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzipped OCI image layer.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Gzipped Docker image layer.
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Uncompressed Docker image layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The Spin packaging formats the shim runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageFormat {
    /// `spin registry push`: wasm/data/archive layers plus the locked app.
    SpinRegistryPush,
    /// A single `application/wasm` component (`wkg oci push`).
    WasmComponent,
    /// A plain WASI image holding `/spin.toml` and the wasm files.
    SpinImage,
}

impl ImageFormat {
    /// The name used in `status.imageFormat` and condition reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::SpinRegistryPush => "SpinRegistryPush",
            ImageFormat::WasmComponent => "WasmComponent",
            ImageFormat::SpinImage => "SpinImage",
        }
    }

    /// Parse [`ImageFormat::as_str`] output (e.g. from status).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::SpinRegistryPush, Self::WasmComponent, Self::SpinImage]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content descriptor (manifest config, layer, or index entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// `os`/`architecture` of an index entry or image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `wasip1`, `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `wasm`, `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Whether the shim's WASI platforms: os `wasi`/`wasip1`/`wasip2`, or
    /// architecture `wasm`.
    pub fn is_wasm(&self) -> bool {
        matches!(self.os.as_str(), "wasi" | "wasip1" | "wasip2") || self.architecture == "wasm"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI or Docker v2.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Manifest media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, in order.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// An image index / manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
}

/// A manifest as fetched: an index or an image manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    /// An index (multi-platform).
    Index(ImageIndex),
    /// A single image manifest.
    Image(Box<ImageManifest>),
}

/// Parse a manifest body; `None` if it is neither an index nor an image
/// manifest (the caller reports it as an invalid artifact).
pub fn parse_manifest(body: &[u8]) -> Result<Manifest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let is_index = media_type == OCI_INDEX
        || media_type == DOCKER_MANIFEST_LIST
        || (media_type.is_empty() && value.get("manifests").is_some());
    if is_index {
        serde_json::from_value(value)
            .map(Manifest::Index)
            .map_err(|e| format!("invalid image index: {e}"))
    } else {
        serde_json::from_value(value)
            .map(|m| Manifest::Image(Box::new(m)))
            .map_err(|e| format!("invalid image manifest: {e}"))
    }
}

/// The index entry to run: the first WASI platform entry.
pub fn select_wasm_entry(index: &ImageIndex) -> Option<&Descriptor> {
    index
        .manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(Platform::is_wasm))
}

/// What the manifest's media types alone say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classification {
    /// Decided by media types.
    Format(ImageFormat),
    /// A plain image: read the config (platform) and then the layers.
    PlainImage,
    /// Not runnable by the shim, with the reason.
    NotSpin(String),
}

/// Classify a manifest by its media types.
pub fn classify(manifest: &ImageManifest) -> Classification {
    let layer_types: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    if layer_types.contains(&SPIN_LOCKED_APP) || manifest.config.media_type == SPIN_LOCKED_APP {
        return Classification::Format(ImageFormat::SpinRegistryPush);
    }
    if layer_types.contains(&WASM_COMPONENT) {
        return if layer_types.len() == 1 {
            Classification::Format(ImageFormat::WasmComponent)
        } else {
            Classification::NotSpin(format!(
                "an {WASM_COMPONENT} artifact must have exactly one layer, found {}",
                layer_types.len()
            ))
        };
    }
    if layer_types
        .iter()
        .any(|t| [WASM_LAYER, DATA_LAYER, ARCHIVE_LAYER].contains(t))
    {
        return Classification::NotSpin(format!(
            "Wasm content layers without a locked Spin app layer ({SPIN_LOCKED_APP})"
        ));
    }
    let plain_config =
        [OCI_IMAGE_CONFIG, DOCKER_IMAGE_CONFIG].contains(&manifest.config.media_type.as_str());
    if plain_config && !layer_types.is_empty() && layer_types.iter().all(|t| is_image_layer(t)) {
        return Classification::PlainImage;
    }
    Classification::NotSpin("no Spin app, Wasm component or WASI image layers".to_string())
}

/// Whether a media type is a container image layer (any compression).
pub fn is_image_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// The platform of an image config blob (`os`, `architecture`, `variant`).
pub fn config_platform(config: &[u8]) -> Option<Platform> {
    serde_json::from_slice::<Platform>(config)
        .ok()
        .filter(|p| !p.os.is_empty() || !p.architecture.is_empty())
}

/// Bounds for reading plain-image layers while looking for `/spin.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLimits {
    /// Layers larger than this (compressed, as declared) are not read.
    pub max_layer_bytes: u64,
    /// Stop reading layers once this many bytes were downloaded.
    pub max_total_bytes: u64,
    /// Read at most this many layers.
    pub max_layers: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_layer_bytes: 32 << 20,
            max_total_bytes: 64 << 20,
            max_layers: 16,
        }
    }
}

/// Whether a layer can be scanned (tar or tar+gzip).
pub fn scannable_layer(media_type: &str) -> bool {
    [
        OCI_LAYER_TAR,
        OCI_LAYER_TAR_GZIP,
        DOCKER_LAYER_TAR,
        DOCKER_LAYER_TAR_GZIP,
    ]
    .contains(&media_type)
}

/// Whether a tar (or tar+gzip) layer holds `/spin.toml` at its root.
pub fn layer_has_spin_toml(media_type: &str, data: &[u8]) -> Result<bool, String> {
    let gz = media_type.ends_with("gzip");
    let reader: Box<dyn Read + '_> = if gz {
        Box::new(flate2::read::GzDecoder::new(data))
    } else {
        Box::new(data)
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("layer is not a tar archive: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("layer is not a readable tar archive: {e}"))?;
        let path = entry.path().map_err(|e| format!("bad tar path: {e}"))?;
        let p = path.to_string_lossy();
        let p = p.trim_start_matches("./").trim_start_matches('/');
        if p == "spin.toml" && entry.header().entry_type().is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
            platform: None,
            annotations: None,
        }
    }

    fn manifest(config: &str, layers: &[&str]) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: desc(config),
            layers: layers.iter().map(|l| desc(l)).collect(),
            annotations: None,
        }
    }

    #[test]
    fn classifies_the_three_formats() {
        let spin = manifest(OCI_IMAGE_CONFIG, &[WASM_LAYER, DATA_LAYER, SPIN_LOCKED_APP]);
        assert_eq!(
            classify(&spin),
            Classification::Format(ImageFormat::SpinRegistryPush)
        );
        let legacy = manifest(SPIN_LOCKED_APP, &[WASM_LAYER]);
        assert_eq!(
            classify(&legacy),
            Classification::Format(ImageFormat::SpinRegistryPush)
        );
        let comp = manifest(WASM_CONFIG_V0, &[WASM_COMPONENT]);
        assert_eq!(
            classify(&comp),
            Classification::Format(ImageFormat::WasmComponent)
        );
        let plain = manifest(OCI_IMAGE_CONFIG, &[OCI_LAYER_TAR_GZIP]);
        assert_eq!(classify(&plain), Classification::PlainImage);
        let docker = manifest(DOCKER_IMAGE_CONFIG, &[DOCKER_LAYER_TAR_GZIP]);
        assert_eq!(classify(&docker), Classification::PlainImage);
    }

    #[test]
    fn rejects_other_artifacts() {
        for m in [
            manifest(WASM_CONFIG_V0, &[WASM_COMPONENT, WASM_COMPONENT]),
            manifest(OCI_IMAGE_CONFIG, &[WASM_LAYER]),
            manifest(
                "application/vnd.cncf.helm.config.v1+json",
                &["application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
            ),
            manifest(OCI_IMAGE_CONFIG, &[]),
        ] {
            assert!(matches!(classify(&m), Classification::NotSpin(_)), "{m:?}");
        }
    }

    #[test]
    fn wasm_platforms() {
        let p = |os: &str, arch: &str| Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: None,
        };
        assert!(p("wasip1", "wasm").is_wasm());
        assert!(p("wasip2", "wasm").is_wasm());
        assert!(p("wasi", "wasm").is_wasm());
        assert!(p("linux", "wasm").is_wasm());
        assert!(!p("linux", "amd64").is_wasm());
        let mut index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![desc(OCI_MANIFEST), desc(OCI_MANIFEST)],
        };
        index.manifests[0].platform = Some(p("linux", "amd64"));
        assert!(select_wasm_entry(&index).is_none());
        index.manifests[1].platform = Some(p("wasip1", "wasm"));
        index.manifests[1].digest = "sha256:wasm".into();
        assert_eq!(select_wasm_entry(&index).unwrap().digest, "sha256:wasm");
    }

    #[test]
    fn parses_index_and_manifest() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(parse_manifest(idx), Ok(Manifest::Index(_))));
        let m = serde_json::to_vec(&manifest(OCI_IMAGE_CONFIG, &[OCI_LAYER_TAR])).unwrap();
        assert!(matches!(parse_manifest(&m), Ok(Manifest::Image(_))));
        assert!(parse_manifest(b"not json").is_err());
        assert_eq!(
            config_platform(br#"{"os":"linux","architecture":"arm64","variant":"v8"}"#)
                .unwrap()
                .to_string(),
            "linux/arm64/v8"
        );
    }

    fn tar_with(paths: &[&str], gzip: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for p in paths {
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, &b"abc"[..]).unwrap();
        }
        let data = b.into_inner().unwrap();
        if !gzip {
            return data;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn finds_spin_toml_at_root_only() {
        assert!(
            layer_has_spin_toml(
                OCI_LAYER_TAR_GZIP,
                &tar_with(&["app.wasm", "spin.toml"], true)
            )
            .unwrap()
        );
        assert!(layer_has_spin_toml(OCI_LAYER_TAR, &tar_with(&["./spin.toml"], false)).unwrap());
        assert!(
            !layer_has_spin_toml(OCI_LAYER_TAR_GZIP, &tar_with(&["sub/spin.toml"], true)).unwrap()
        );
        assert!(layer_has_spin_toml(OCI_LAYER_TAR_GZIP, b"garbage").is_err());
    }
}
