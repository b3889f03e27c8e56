//! `spindle push`: package a Spin app the way `spin registry push` does, or a
//! single component the way `wkg oci push` does, and push it.
//!
//! The Spin format (see `docs/oci.md` for what was verified against Spin's
//! source and what is assumed):
//! - one `application/vnd.wasm.content.layer.v1+wasm` layer per component and
//!   per local component dependency; the locked component's
//!   `source.digest` is the layer's digest (content of at most 128 bytes is
//!   also inlined, base64, as Spin does);
//! - one `application/vnd.wasm.content.layer.v1+data` layer per static file
//!   larger than 128 bytes; smaller files are only inlined in the locked app;
//! - last, the locked app JSON as a layer of type
//!   `application/vnd.fermyon.spin.application.v1+config`;
//! - config: an OCI image config `{"architecture":"wasm","os":"wasip1",
//!   "config":{"Labels":{"com.fermyon.spin.lockedAppDigest":…}},
//!   "rootfs":{"type":"layers","diff_ids":[]}}`.
//!
//! Manifest reading and locked-app construction are pure functions over an
//! in-memory [`SpinAppSource`]; only [`load_app`] reads files and [`push`]
//! talks to a registry.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tracing::info;

use super::format::{self, Descriptor};
use super::{Credentials, Error, ImageRef, Keyring, PlainHttp};

/// Content up to this size is inlined into the locked app (Spin's
/// `DEFAULT_CONTENT_REF_INLINE_MAX_SIZE`).
pub const INLINE_MAX_SIZE: usize = 128;

/// Errors of `spindle push`.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `spin.toml` is invalid.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The app uses something `spindle push` does not package.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The registry refused the push.
    #[error(transparent)]
    Registry(#[from] Error),
}

/// A blob to push: config or layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Media type (in the manifest descriptor).
    pub media_type: String,
    /// Content.
    pub data: Vec<u8>,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
}

impl Blob {
    /// A blob with its digest computed.
    pub fn new(media_type: impl Into<String>, data: Vec<u8>) -> Self {
        let digest = sha256_digest(&data);
        Blob {
            media_type: media_type.into(),
            data,
            digest,
        }
    }

    /// The manifest descriptor of this blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.data.len() as i64,
            platform: None,
            annotations: None,
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Everything to push for one manifest: its blobs and the manifest bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// Config and layers (none for an index).
    pub blobs: Vec<Blob>,
    /// The manifest exactly as pushed (its digest is the artifact's digest).
    pub manifest: Vec<u8>,
    /// The manifest's media type.
    pub manifest_media_type: String,
}

impl Artifact {
    /// An OCI image manifest over `config` and `layers`.
    pub fn image(
        config: Blob,
        layers: Vec<Blob>,
        annotations: BTreeMap<String, String>,
    ) -> Artifact {
        let manifest = format::ImageManifest {
            schema_version: 2,
            media_type: Some(format::OCI_MANIFEST.into()),
            artifact_type: None,
            config: config.descriptor(),
            layers: layers.iter().map(Blob::descriptor).collect(),
            annotations: (!annotations.is_empty()).then_some(annotations),
        };
        let mut blobs = vec![config];
        blobs.extend(layers);
        Artifact {
            blobs,
            manifest: serde_json::to_vec(&manifest).expect("manifest serializes"),
            manifest_media_type: format::OCI_MANIFEST.into(),
        }
    }

    /// An OCI image index over already-pushed manifests.
    pub fn index(manifests: Vec<Descriptor>) -> Artifact {
        let index = format::ImageIndex {
            schema_version: 2,
            media_type: Some(format::OCI_INDEX.into()),
            manifests,
        };
        Artifact {
            blobs: Vec::new(),
            manifest: serde_json::to_vec(&index).expect("index serializes"),
            manifest_media_type: format::OCI_INDEX.into(),
        }
    }

    /// The manifest digest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// A descriptor of this artifact's manifest (for an index entry).
    pub fn descriptor(&self, platform: Option<format::Platform>) -> Descriptor {
        Descriptor {
            media_type: self.manifest_media_type.clone(),
            digest: self.digest(),
            size: self.manifest.len() as i64,
            platform,
            annotations: None,
        }
    }
}

// ---------------------------------------------------------------------------
// spin.toml (manifest version 2)

#[derive(Deserialize)]
struct SpinToml {
    spin_manifest_version: toml::Value,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
    #[serde(flatten)]
    extra: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct Application {
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    trigger: BTreeMap<String, toml::Table>,
    #[serde(flatten)]
    extra: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct VariableDecl {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    #[serde(flatten)]
    extra: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileMount {
    Pattern(String),
    Placement { source: String, destination: String },
}

#[derive(Deserialize)]
struct ComponentDecl {
    source: toml::Value,
    #[serde(default)]
    description: String,
    #[serde(default)]
    files: Vec<FileMount>,
    #[serde(default)]
    exclude_files: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    build: Option<toml::Value>,
    #[serde(default)]
    dependencies_inherit_configuration: bool,
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    #[serde(flatten)]
    extra: BTreeMap<String, toml::Value>,
}

/// A component dependency loaded from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencySource {
    /// The dependency's Wasm.
    pub wasm: Vec<u8>,
    /// The export to use, if any.
    pub export: Option<String>,
}

/// A component's content loaded from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSource {
    /// The component's Wasm.
    pub wasm: Vec<u8>,
    /// Static files: guest path (relative, `/`-separated) → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Local dependencies by name.
    pub dependencies: BTreeMap<String, DependencySource>,
}

/// A Spin app read from a directory: the parsed `spin.toml` and the content
/// it references. Build the artifact with [`spin_artifact`].
pub struct SpinAppSource {
    manifest: SpinToml,
    components: BTreeMap<String, ComponentSource>,
    /// Things in `spin.toml` that are not packaged (unknown keys).
    pub warnings: Vec<String>,
}

/// Parse `spin.toml` text and load what it references relative to `dir`.
pub fn load_app(dir: &Path) -> Result<SpinAppSource, PushError> {
    let path = dir.join("spin.toml");
    let text = std::fs::read_to_string(&path).map_err(|source| PushError::Io {
        path: path.clone(),
        source,
    })?;
    let manifest = parse_spin_toml(&path, &text)?;
    let mut warnings = unknown_keys(&manifest);
    let mut components = BTreeMap::new();
    for (id, c) in &manifest.component {
        let wasm_path = match &c.source {
            toml::Value::String(p) => dir.join(p),
            _ => {
                return Err(PushError::Unsupported(format!(
                    "component {id}: only local `source = \"path.wasm\"` sources are packaged (remote url/digest sources are not)"
                )));
            }
        };
        let wasm = read(&wasm_path)?;
        let files = collect_files(dir, id, &c.files, &c.exclude_files)?;
        let mut dependencies = BTreeMap::new();
        for (name, dep) in &c.dependencies {
            let table = dep.as_table().filter(|t| t.contains_key("path")).ok_or_else(|| {
                PushError::Unsupported(format!(
                    "component {id}: dependency {name:?} is not a local {{ path = \"…\" }} dependency; registry, url and component-reference dependencies are not packaged"
                ))
            })?;
            let dep_path =
                table
                    .get("path")
                    .and_then(|p| p.as_str())
                    .ok_or_else(|| PushError::Manifest {
                        path: path.clone(),
                        message: format!(
                            "component {id}: dependency {name:?}: path must be a string"
                        ),
                    })?;
            let export = table
                .get("export")
                .and_then(|e| e.as_str())
                .map(str::to_string);
            dependencies.insert(
                name.clone(),
                DependencySource {
                    wasm: read(&dir.join(dep_path))?,
                    export,
                },
            );
        }
        if !c.allowed_http_hosts.is_empty() {
            warnings.push(format!(
                "component {id}: allowed_http_hosts is deprecated and not packaged; use allowed_outbound_hosts"
            ));
        }
        components.insert(
            id.clone(),
            ComponentSource {
                wasm,
                files,
                dependencies,
            },
        );
    }
    Ok(SpinAppSource {
        manifest,
        components,
        warnings,
    })
}

/// Parse and check `spin.toml` (v2) text.
fn parse_spin_toml(path: &Path, text: &str) -> Result<SpinToml, PushError> {
    let bad = |message: String| PushError::Manifest {
        path: path.to_path_buf(),
        message,
    };
    let manifest: SpinToml = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if manifest.spin_manifest_version.as_integer() != Some(2)
        && manifest.spin_manifest_version.as_str() != Some("2")
    {
        return Err(bad(
            "only spin_manifest_version = 2 is supported (run `spin doctor` to upgrade a v1 manifest)".into(),
        ));
    }
    for (name, v) in &manifest.variables {
        if v.required == v.default.is_some() {
            return Err(bad(format!(
                "variable {name:?} must be `required` OR have a `default`"
            )));
        }
    }
    for (trigger_type, triggers) in &manifest.trigger {
        for t in triggers {
            match t.get("component") {
                Some(toml::Value::String(id)) if !manifest.component.contains_key(id) => {
                    return Err(bad(format!(
                        "[[trigger.{trigger_type}]] references unknown component {id:?}"
                    )));
                }
                Some(toml::Value::String(_)) | None => {}
                Some(_) => {
                    return Err(PushError::Unsupported(format!(
                        "[[trigger.{trigger_type}]]: inline component tables are not packaged; declare [component.<id>] and reference it by id"
                    )));
                }
            }
            if t.get("components").is_some_and(|c| !c.is_table()) {
                return Err(bad(format!(
                    "[[trigger.{trigger_type}]]: components must be a table"
                )));
            }
        }
    }
    Ok(manifest)
}

fn unknown_keys(m: &SpinToml) -> Vec<String> {
    let mut w = Vec::new();
    w.extend(
        m.extra
            .keys()
            .map(|k| format!("unknown top-level key {k:?} is not packaged")),
    );
    w.extend(
        m.application
            .extra
            .keys()
            .filter(|k| *k != "tool")
            .map(|k| format!("unknown [application] key {k:?} is not packaged")),
    );
    for (name, v) in &m.variables {
        w.extend(
            v.extra
                .keys()
                .filter(|k| *k != "description")
                .map(|k| format!("variable {name}: unknown key {k:?} is not packaged")),
        );
    }
    for (id, c) in &m.component {
        w.extend(
            c.extra
                .keys()
                .filter(|k| *k != "tool")
                .map(|k| format!("component {id}: unknown key {k:?} is not packaged")),
        );
    }
    w
}

fn read(path: &Path) -> Result<Vec<u8>, PushError> {
    std::fs::read(path).map_err(|source| PushError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Expand a component's `files` (patterns and `{source, destination}`
/// placements) into guest path → content, like Spin's loader: a directory
/// pattern keeps its path under the app root, a glob matches files under the
/// app root, a placement maps `source` onto `destination`.
fn collect_files(
    dir: &Path,
    id: &str,
    mounts: &[FileMount],
    exclude: &[String],
) -> Result<BTreeMap<String, Vec<u8>>, PushError> {
    let mut out = BTreeMap::new();
    let excluded = |rel: &str| exclude.iter().any(|p| glob_path(p, rel));
    for mount in mounts {
        match mount {
            FileMount::Pattern(pattern) => {
                let p = dir.join(pattern);
                if p.is_file() {
                    if !excluded(pattern) {
                        out.insert(portable(pattern), read(&p)?);
                    }
                } else if p.is_dir() {
                    for (rel, abs) in walk(&p)? {
                        let app_rel = portable(&format!("{}/{rel}", pattern.trim_end_matches('/')));
                        if !excluded(&app_rel) {
                            out.insert(app_rel, read(&abs)?);
                        }
                    }
                } else if pattern.contains(['*', '?', '[']) {
                    for (rel, abs) in walk(dir)? {
                        if glob_path(pattern, &rel) && !excluded(&rel) {
                            out.insert(rel, read(&abs)?);
                        }
                    }
                } else {
                    return Err(PushError::Manifest {
                        path: dir.join("spin.toml"),
                        message: format!(
                            "component {id}: file {pattern:?} does not exist and is not a glob pattern"
                        ),
                    });
                }
            }
            FileMount::Placement {
                source,
                destination,
            } => {
                let src = dir.join(source);
                let dest = destination.trim_start_matches('/').trim_end_matches('/');
                if src.is_dir() {
                    for (rel, abs) in walk(&src)? {
                        let app_rel = portable(&format!("{}/{rel}", source.trim_end_matches('/')));
                        if !excluded(&app_rel) {
                            let guest = if dest.is_empty() {
                                rel.clone()
                            } else {
                                format!("{dest}/{rel}")
                            };
                            out.insert(guest, read(&abs)?);
                        }
                    }
                } else {
                    out.insert(dest.to_string(), read(&src)?);
                }
            }
        }
    }
    if out.keys().any(|p| p.split('/').any(|s| s == "..")) {
        return Err(PushError::Unsupported(format!(
            "component {id}: file paths must not contain '..'"
        )));
    }
    Ok(out)
}

fn portable(p: &str) -> String {
    p.trim_start_matches("./").replace('\\', "/")
}

/// Every regular file under `root`: (`/`-separated path relative to root, absolute path), sorted.
fn walk(root: &Path) -> Result<Vec<(String, PathBuf)>, PushError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| PushError::Io {
            path: d.clone(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| PushError::Io {
                path: d.clone(),
                source,
            })?;
            let p = e.path();
            let ft = e.file_type().map_err(|source| PushError::Io {
                path: p.clone(),
                source,
            })?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() || (ft.is_symlink() && p.is_file()) {
                let rel = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Path glob: `**` matches any number of segments, `*` and `?` within one.
fn glob_path(pattern: &str, path: &str) -> bool {
    fn seg(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| seg(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && seg(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && seg(rest, &s[1..]),
        }
    }
    fn segs(p: &[&str], s: &[&str]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((&"**", rest)) => (0..=s.len()).any(|i| segs(rest, &s[i..])),
            Some((first, rest)) => {
                !s.is_empty() && seg(first.as_bytes(), s[0].as_bytes()) && segs(rest, &s[1..])
            }
        }
    }
    let p: Vec<&str> = pattern.trim_start_matches("./").split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    segs(&p, &s)
}

// ---------------------------------------------------------------------------
// The locked app and the artifact (pure)

fn content_ref(data: &[u8]) -> Map<String, Value> {
    let mut m = Map::new();
    if data.len() <= INLINE_MAX_SIZE {
        m.insert(
            "inline".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
        );
    }
    m.insert("digest".into(), Value::String(sha256_digest(data)));
    m
}

fn toml_to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Trigger ids as Spin's `normalize_trigger_ids` assigns them: an explicit
/// `id`, else `<component>-<type>-trigger`, else `<type>-trigger<n>`.
fn trigger_ids(
    triggers: &BTreeMap<String, Vec<toml::Table>>,
) -> Vec<(String, String, toml::Table)> {
    let mut taken: BTreeSet<String> = triggers
        .values()
        .flatten()
        .filter_map(|t| t.get("id").and_then(|i| i.as_str()).map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for (trigger_type, list) in triggers {
        let mut counter = 1;
        for t in list {
            let id = match t
                .get("id")
                .and_then(|i| i.as_str())
                .filter(|i| !i.is_empty())
            {
                Some(id) => id.to_string(),
                None => {
                    let natural = t
                        .get("component")
                        .and_then(|c| c.as_str())
                        .map(|c| format!("{c}-{trigger_type}-trigger"))
                        .filter(|c| !taken.contains(c));
                    match natural {
                        Some(id) => id,
                        None => loop {
                            let id = format!("{trigger_type}-trigger{counter}");
                            counter += 1;
                            if !taken.contains(&id) {
                                break id;
                            }
                        },
                    }
                }
            };
            taken.insert(id.clone());
            let mut config = t.clone();
            config.remove("id");
            out.push((id, trigger_type.clone(), config));
        }
    }
    out
}

/// The locked app JSON (`spin.json`) the shim loads, and the layers its
/// content references (wasm layers, then data layers; without the locked
/// app layer itself).
pub fn locked_app(app: &SpinAppSource) -> (Value, Vec<Blob>) {
    let m = &app.manifest;
    let mut layers: Vec<Blob> = Vec::new();
    let push_layer = |b: Blob, layers: &mut Vec<Blob>| {
        if !layers
            .iter()
            .any(|l| l.digest == b.digest && l.media_type == b.media_type)
        {
            layers.push(b);
        }
    };

    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(m.application.name));
    metadata.insert("version".into(), json!(m.application.version));
    metadata.insert("description".into(), json!(m.application.description));
    metadata.insert("authors".into(), json!(m.application.authors));
    let globals: Map<String, Value> = m
        .application
        .trigger
        .iter()
        .map(|(k, v)| (k.clone(), toml_to_json(&toml::Value::Table(v.clone()))))
        .collect();
    metadata.insert("triggers".into(), Value::Object(globals));
    if m.trigger.len() == 1 {
        let trigger_type = m.trigger.keys().next().expect("one trigger type");
        let mut single = m
            .application
            .trigger
            .get(trigger_type)
            .map(|t| toml_to_json(&toml::Value::Table(t.clone())))
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        single.insert("type".into(), json!(trigger_type));
        metadata.insert("trigger".into(), Value::Object(single));
    }

    let variables: Map<String, Value> = m
        .variables
        .iter()
        .map(|(name, v)| {
            let mut var = Map::new();
            if let Some(d) = &v.default {
                var.insert("default".into(), json!(d));
            }
            if v.secret {
                var.insert("secret".into(), json!(true));
            }
            (name.to_lowercase(), Value::Object(var))
        })
        .collect();

    let triggers: Vec<Value> = trigger_ids(&m.trigger)
        .into_iter()
        .map(|(id, trigger_type, config)| {
            json!({"id": id, "trigger_type": trigger_type, "trigger_config": toml_to_json(&toml::Value::Table(config))})
        })
        .collect();

    let mut service_chaining = false;
    let mut components = Vec::new();
    for (id, decl) in &m.component {
        let src = &app.components[id];
        let wasm = Blob::new(format::WASM_LAYER, src.wasm.clone());
        let mut source = content_ref(&wasm.data);
        source.insert("content_type".into(), json!(format::WASM_COMPONENT));
        push_layer(wasm, &mut layers);

        let mut metadata = Map::new();
        metadata.insert("description".into(), json!(decl.description));
        metadata.insert(
            "allowed_outbound_hosts".into(),
            json!(decl.allowed_outbound_hosts),
        );
        metadata.insert("key_value_stores".into(), json!(decl.key_value_stores));
        metadata.insert("databases".into(), json!(decl.sqlite_databases));
        metadata.insert("ai_models".into(), json!(decl.ai_models));
        if let Some(build) = &decl.build {
            metadata.insert("build".into(), toml_to_json(build));
        }
        service_chaining |= decl
            .allowed_outbound_hosts
            .iter()
            .any(|h| h.contains(".spin.internal"));

        let mut component = Map::new();
        component.insert("id".into(), json!(id));
        component.insert("metadata".into(), Value::Object(metadata));
        component.insert("source".into(), Value::Object(source));
        if !decl.environment.is_empty() {
            component.insert("env".into(), json!(decl.environment));
        }
        if !src.files.is_empty() {
            let files: Vec<Value> = src
                .files
                .iter()
                .map(|(path, data)| {
                    let mut f = content_ref(data);
                    if data.len() > INLINE_MAX_SIZE {
                        push_layer(Blob::new(format::DATA_LAYER, data.clone()), &mut layers);
                    }
                    f.insert("path".into(), json!(path));
                    Value::Object(f)
                })
                .collect();
            component.insert("files".into(), Value::Array(files));
        }
        if !decl.variables.is_empty() {
            component.insert("config".into(), json!(decl.variables));
        }
        if !src.dependencies.is_empty() {
            let deps: Map<String, Value> = src
                .dependencies
                .iter()
                .map(|(name, dep)| {
                    let blob = Blob::new(format::WASM_LAYER, dep.wasm.clone());
                    let mut source = content_ref(&blob.data);
                    source.insert("content_type".into(), json!(format::WASM_COMPONENT));
                    push_layer(blob, &mut layers);
                    let mut d = Map::new();
                    d.insert("source".into(), Value::Object(source));
                    d.insert("export".into(), json!(dep.export));
                    if decl.dependencies_inherit_configuration {
                        d.insert("inherit".into(), json!("All"));
                    }
                    (name.clone(), Value::Object(d))
                })
                .collect();
            component.insert("dependencies".into(), Value::Object(deps));
        }
        components.push(Value::Object(component));
    }

    let mut locked = Map::new();
    locked.insert(
        "spin_lock_version".into(),
        json!(if service_chaining { 1 } else { 0 }),
    );
    if service_chaining {
        locked.insert("must_understand".into(), json!(["host_requirements"]));
        locked.insert(
            "host_requirements".into(),
            json!({"local_service_chaining": "required"}),
        );
    }
    locked.insert("metadata".into(), Value::Object(metadata));
    if !variables.is_empty() {
        locked.insert("variables".into(), Value::Object(variables));
    }
    locked.insert("triggers".into(), Value::Array(triggers));
    locked.insert("components".into(), Value::Array(components));
    (Value::Object(locked), layers)
}

/// The `spin registry push`-format artifact for `app`. `created` (RFC 3339)
/// goes into the `org.opencontainers.image.created` annotation when given.
pub fn spin_artifact(app: &SpinAppSource, created: Option<&str>) -> Artifact {
    let (locked, mut layers) = locked_app(app);
    let locked_layer = Blob::new(
        format::SPIN_LOCKED_APP,
        serde_json::to_vec(&locked).expect("locked app serializes"),
    );
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Labels": {format::LOCKED_APP_DIGEST_LABEL: locked_layer.digest}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    layers.push(locked_layer);
    let config = Blob::new(
        format::OCI_IMAGE_CONFIG,
        serde_json::to_vec(&config).expect("config serializes"),
    );
    let a = &app.manifest.application;
    let mut annotations = BTreeMap::new();
    let mut annotate = |k: &str, v: &str| {
        if !v.is_empty() {
            annotations.insert(k.to_string(), v.to_string());
        }
    };
    annotate("org.opencontainers.image.title", &a.name);
    annotate("org.opencontainers.image.version", &a.version);
    annotate("org.opencontainers.image.description", &a.description);
    annotate("org.opencontainers.image.authors", &a.authors.join(", "));
    annotate(
        "org.opencontainers.image.created",
        created.unwrap_or_default(),
    );
    Artifact::image(config, layers, annotations)
}

/// A single component as `wkg oci push` packages it: one `application/wasm`
/// layer and a `application/vnd.wasm.config.v0+json` config.
pub fn component_artifact(wasm: Vec<u8>, created: Option<&str>) -> Artifact {
    let layer = Blob::new(format::WASM_COMPONENT, wasm);
    let mut config = json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.digest],
    });
    if let Some(c) = created {
        config["created"] = json!(c);
    }
    let config = Blob::new(
        format::WASM_CONFIG_V0,
        serde_json::to_vec(&config).expect("config serializes"),
    );
    Artifact::image(config, vec![layer], BTreeMap::new())
}

// ---------------------------------------------------------------------------
// Pushing

/// Push `artifact` to `reference` (its tag, or its digest when it has no
/// tag). Blobs already in the repository are not uploaded again. Returns the
/// manifest digest.
pub async fn push(
    reference: &ImageRef,
    artifact: &Artifact,
    credentials: &Credentials,
    plain_http: PlainHttp,
) -> Result<String, Error> {
    let client = super::resolver::registry_client(plain_http.protocol_for(reference));
    let auth = credentials.to_registry_auth();
    let target = reference.to_string();
    let map = |e| Error::from_oci(e, reference.registry(), reference.repository(), &target);
    let oref = reference.oci();
    client
        .store_auth_if_needed(oref.resolve_registry(), &auth)
        .await;
    for blob in &artifact.blobs {
        let exists = client.blob_exists(oref, &blob.digest).await.map_err(map)?;
        if !exists {
            client
                .push_blob(oref, blob.data.clone(), &blob.digest)
                .await
                .map_err(map)?;
        }
    }
    let digest = artifact.digest();
    let manifest_ref = match reference.tag() {
        Some(_) => oref.clone(),
        None => reference.with_digest(&digest),
    };
    let content_type =
        artifact
            .manifest_media_type
            .parse()
            .map_err(|_| Error::InvalidArtifact {
                reference: target.clone(),
                registry: reference.registry().to_string(),
                detail: "manifest media type is not a valid header value".into(),
            })?;
    client
        .push_manifest_raw(&manifest_ref, artifact.manifest.clone(), content_type)
        .await
        .map_err(map)?;
    info!(reference = %reference, %digest, "pushed");
    Ok(digest)
}

/// What to package.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PushFormat {
    /// A Spin app (`spin registry push` format) from a directory with spin.toml.
    #[default]
    Spin,
    /// A single Wasm component (`application/wasm`, as `wkg oci push`) from a .wasm file.
    Component,
}

/// Plain HTTP policy on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InsecureLoopback {
    /// Plain HTTP for loopback registries (127.0.0.0/8, localhost, ::1), HTTPS otherwise.
    #[default]
    Auto,
    /// HTTPS everywhere.
    Never,
}

/// `spindle push` arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct PushArgs {
    /// A directory holding spin.toml (--format spin) or a .wasm file (--format component).
    pub path: PathBuf,
    /// Where to push, e.g. ghcr.io/org/app:v1.
    pub reference: String,
    /// What to package.
    #[arg(long, value_enum, default_value_t = PushFormat::Spin)]
    pub format: PushFormat,
    /// Plain HTTP for loopback registries only (auto) or never.
    #[arg(long, value_enum, default_value_t = InsecureLoopback::Auto)]
    pub insecure_loopback: InsecureLoopback,
    /// Registry user name (with --password-stdin). Without it, credentials
    /// come from the docker config ($DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json), else anonymous.
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// Run `spindle push`: print the pushed reference pinned to its digest.
pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let reference = ImageRef::parse(&args.reference)?;
    let plain_http = match args.insecure_loopback {
        InsecureLoopback::Auto => PlainHttp::LoopbackOnly,
        InsecureLoopback::Never => PlainHttp::Never,
    };
    let credentials = match (&args.username, args.password_stdin) {
        (Some(user), true) => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            Credentials::basic(user.clone(), password.trim_end_matches(['\r', '\n']))
        }
        _ => docker_config_credentials(&reference),
    };
    let created = k8s_openapi::jiff::Timestamp::now().to_string();
    let artifact = match args.format {
        PushFormat::Spin => {
            let app = load_app(&args.path)?;
            for w in &app.warnings {
                eprintln!("warning: {w}");
            }
            spin_artifact(&app, Some(&created))
        }
        PushFormat::Component => component_artifact(read(&args.path)?, Some(&created)),
    };
    let digest = push(&reference, &artifact, &credentials, plain_http).await?;
    println!("{}", reference.pinned(&digest));
    Ok(())
}

/// Credentials for `reference` from the docker CLI config, if any.
fn docker_config_credentials(reference: &ImageRef) -> Credentials {
    let path = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"));
    let Some(path) = path else {
        return Credentials::Anonymous;
    };
    let Ok(data) = std::fs::read(&path) else {
        return Credentials::Anonymous;
    };
    let mut keyring = Keyring::new();
    if let Err(e) = keyring.add_docker_config_json(&path.display().to_string(), &data) {
        eprintln!("warning: ignoring docker config: {e}");
    }
    keyring
        .lookup(reference)
        .into_iter()
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::format::ImageFormat;

    const TOML: &str = r#"
spin_manifest_version = 2

[application]
name = "hello"
version = "0.1.0"
authors = ["A <a@example.com>"]

[application.trigger.http]
base = "/"

[variables]
greeting = { default = "hi" }
token = { required = true, secret = true }

[[trigger.http]]
route = "/hello/..."
component = "hello"

[[trigger.http]]
id = "named"
route = { private = true }
component = "backend"

[component.hello]
source = "hello.wasm"
files = ["static", { source = "assets", destination = "/data" }]
exclude_files = ["static/skip.txt"]
allowed_outbound_hosts = ["http://backend.spin.internal"]
key_value_stores = ["default"]
environment = { RUST_LOG = "info" }
[component.hello.variables]
message = "{{ greeting }}"
[component.hello.dependencies]
"ns:pkg/iface" = { path = "dep.wasm" }

[component.backend]
source = "backend.wasm"
"#;

    fn fixture() -> SpinAppSource {
        let manifest = parse_spin_toml(Path::new("spin.toml"), TOML).unwrap();
        let big = vec![7u8; 300];
        let components = BTreeMap::from([
            (
                "hello".to_string(),
                ComponentSource {
                    wasm: b"\0asm\x0d\0\x01\0".to_vec(),
                    files: BTreeMap::from([
                        ("static/index.html".to_string(), b"<h1>hi</h1>".to_vec()),
                        ("data/big.bin".to_string(), big),
                    ]),
                    dependencies: BTreeMap::from([(
                        "ns:pkg/iface".to_string(),
                        DependencySource {
                            wasm: vec![1u8; 200],
                            export: None,
                        },
                    )]),
                },
            ),
            (
                "backend".to_string(),
                ComponentSource {
                    wasm: vec![2u8; 500],
                    files: BTreeMap::new(),
                    dependencies: BTreeMap::new(),
                },
            ),
        ]);
        SpinAppSource {
            manifest,
            components,
            warnings: vec![],
        }
    }

    #[test]
    fn locked_app_shape() {
        let (locked, layers) = locked_app(&fixture());
        // Service chaining → v1 with host requirements.
        assert_eq!(locked["spin_lock_version"], 1);
        assert_eq!(locked["must_understand"], json!(["host_requirements"]));
        assert_eq!(
            locked["host_requirements"],
            json!({"local_service_chaining": "required"})
        );
        assert_eq!(locked["metadata"]["name"], "hello");
        assert_eq!(
            locked["metadata"]["triggers"],
            json!({"http": {"base": "/"}})
        );
        assert_eq!(
            locked["metadata"]["trigger"],
            json!({"type": "http", "base": "/"})
        );
        assert_eq!(
            locked["variables"],
            json!({"greeting": {"default": "hi"}, "token": {"secret": true}})
        );

        let triggers = locked["triggers"].as_array().unwrap();
        assert_eq!(triggers[0]["id"], "hello-http-trigger");
        assert_eq!(triggers[0]["trigger_type"], "http");
        assert_eq!(
            triggers[0]["trigger_config"],
            json!({"route": "/hello/...", "component": "hello"})
        );
        assert_eq!(triggers[1]["id"], "named");
        assert_eq!(
            triggers[1]["trigger_config"]["route"],
            json!({"private": true})
        );

        let comps = locked["components"].as_array().unwrap();
        let hello = comps.iter().find(|c| c["id"] == "hello").unwrap();
        let wasm_digest = sha256_digest(b"\0asm\x0d\0\x01\0");
        assert_eq!(hello["source"]["content_type"], "application/wasm");
        assert_eq!(hello["source"]["digest"], wasm_digest);
        assert!(
            hello["source"]["inline"].is_string(),
            "tiny content is inlined like Spin does"
        );
        assert_eq!(hello["env"], json!({"RUST_LOG": "info"}));
        assert_eq!(hello["config"], json!({"message": "{{ greeting }}"}));
        assert_eq!(
            hello["metadata"]["allowed_outbound_hosts"],
            json!(["http://backend.spin.internal"])
        );
        assert_eq!(hello["metadata"]["key_value_stores"], json!(["default"]));
        let files = hello["files"].as_array().unwrap();
        assert_eq!(files.len(), 2);
        let small = files
            .iter()
            .find(|f| f["path"] == "static/index.html")
            .unwrap();
        assert_eq!(
            small["inline"],
            base64::engine::general_purpose::STANDARD.encode(b"<h1>hi</h1>")
        );
        let big = files.iter().find(|f| f["path"] == "data/big.bin").unwrap();
        assert!(big.get("inline").is_none());
        assert_eq!(big["digest"], sha256_digest(&[7u8; 300]));
        let dep = &hello["dependencies"]["ns:pkg/iface"];
        assert_eq!(dep["source"]["digest"], sha256_digest(&[1u8; 200]));
        assert_eq!(dep["export"], Value::Null);
        assert!(dep.get("inherit").is_none());

        // Every wasm source is a layer; big files are data layers; small ones are not.
        let digests: Vec<(&str, &str)> = layers
            .iter()
            .map(|l| (l.media_type.as_str(), l.digest.as_str()))
            .collect();
        assert!(digests.contains(&(format::WASM_LAYER, wasm_digest.as_str())));
        assert!(digests.contains(&(format::WASM_LAYER, sha256_digest(&[2u8; 500]).as_str())));
        assert!(digests.contains(&(format::WASM_LAYER, sha256_digest(&[1u8; 200]).as_str())));
        assert!(digests.contains(&(format::DATA_LAYER, sha256_digest(&[7u8; 300]).as_str())));
        assert_eq!(layers.len(), 4);
    }

    #[test]
    fn spin_artifact_manifest_and_config() {
        let artifact = spin_artifact(&fixture(), Some("2026-01-01T00:00:00Z"));
        let manifest: format::ImageManifest = serde_json::from_slice(&artifact.manifest).unwrap();
        assert_eq!(manifest.config.media_type, format::OCI_IMAGE_CONFIG);
        let last = manifest.layers.last().unwrap();
        assert_eq!(last.media_type, format::SPIN_LOCKED_APP);
        let config: Value = serde_json::from_slice(&artifact.blobs[0].data).unwrap();
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(
            config["config"]["Labels"][format::LOCKED_APP_DIGEST_LABEL],
            last.digest
        );
        assert_eq!(
            format::classify(&manifest),
            format::Classification::Format(ImageFormat::SpinRegistryPush)
        );
        let ann = manifest.annotations.unwrap();
        assert_eq!(ann["org.opencontainers.image.title"], "hello");
        assert_eq!(
            ann["org.opencontainers.image.created"],
            "2026-01-01T00:00:00Z"
        );
        // The locked app layer parses back and references only pushed layers
        // (or inlined content).
        let locked_blob = artifact
            .blobs
            .iter()
            .find(|b| b.media_type == format::SPIN_LOCKED_APP)
            .unwrap();
        let locked: Value = serde_json::from_slice(&locked_blob.data).unwrap();
        let layer_digests: BTreeSet<&str> =
            manifest.layers.iter().map(|l| l.digest.as_str()).collect();
        for c in locked["components"].as_array().unwrap() {
            assert!(layer_digests.contains(c["source"]["digest"].as_str().unwrap()));
            for f in c["files"].as_array().into_iter().flatten() {
                assert!(
                    f.get("inline").is_some()
                        || layer_digests.contains(f["digest"].as_str().unwrap())
                );
            }
        }
        // Deterministic for the same input.
        assert_eq!(
            artifact,
            spin_artifact(&fixture(), Some("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn no_service_chaining_is_v0() {
        let toml = TOML.replace("http://backend.spin.internal", "https://example.com");
        let mut app = fixture();
        app.manifest = parse_spin_toml(Path::new("spin.toml"), &toml).unwrap();
        let (locked, _) = locked_app(&app);
        assert_eq!(locked["spin_lock_version"], 0);
        assert!(locked.get("must_understand").is_none());
        assert!(locked.get("host_requirements").is_none());
    }

    #[test]
    fn component_artifact_shape() {
        let a = component_artifact(b"\0asm\x0d\0\x01\0".to_vec(), None);
        let m: format::ImageManifest = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m.config.media_type, format::WASM_CONFIG_V0);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].media_type, "application/wasm");
        assert_eq!(
            format::classify(&m),
            format::Classification::Format(ImageFormat::WasmComponent)
        );
    }

    #[test]
    fn manifest_errors() {
        let p = Path::new("spin.toml");
        assert!(matches!(
            parse_spin_toml(p, "spin_manifest_version = 1\n[application]\nname='x'"),
            Err(PushError::Manifest { .. })
        ));
        let bad_var = "spin_manifest_version = 2\n[application]\nname='x'\n[variables]\nv = { required = true, default = 'd' }";
        assert!(matches!(
            parse_spin_toml(p, bad_var),
            Err(PushError::Manifest { .. })
        ));
        let unknown = "spin_manifest_version = 2\n[application]\nname='x'\n[[trigger.http]]\nroute='/'\ncomponent='nope'";
        assert!(matches!(
            parse_spin_toml(p, unknown),
            Err(PushError::Manifest { .. })
        ));
        let inline = "spin_manifest_version = 2\n[application]\nname='x'\n[[trigger.http]]\nroute='/'\ncomponent={ source = 'a.wasm' }";
        assert!(matches!(
            parse_spin_toml(p, inline),
            Err(PushError::Unsupported(_))
        ));
    }

    #[test]
    fn trigger_id_fallbacks() {
        let mut triggers = BTreeMap::new();
        let t = |c: &str| {
            let mut t = toml::Table::new();
            t.insert("component".into(), toml::Value::String(c.into()));
            t
        };
        triggers.insert("http".to_string(), vec![t("a"), t("a"), toml::Table::new()]);
        let ids: Vec<String> = trigger_ids(&triggers)
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        assert_eq!(ids, ["a-http-trigger", "http-trigger1", "http-trigger2"]);
    }

    #[test]
    fn globs() {
        assert!(glob_path("static/**/*.css", "static/a/b/c.css"));
        assert!(glob_path("static/**/*.css", "static/c.css"));
        assert!(glob_path("*.txt", "a.txt"));
        assert!(!glob_path("*.txt", "dir/a.txt"));
        assert!(glob_path("**", "dir/a.txt"));
    }

    #[test]
    fn load_app_reads_files_from_disk() {
        let dir = std::env::temp_dir().join(format!("spindle-push-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("static/sub")).unwrap();
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("hello.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(dir.join("backend.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(dir.join("dep.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(dir.join("static/index.html"), b"hi").unwrap();
        std::fs::write(dir.join("static/skip.txt"), b"no").unwrap();
        std::fs::write(dir.join("static/sub/x.css"), b"css").unwrap();
        std::fs::write(dir.join("assets/a.json"), b"{}").unwrap();
        std::fs::write(dir.join("spin.toml"), TOML).unwrap();
        let app = load_app(&dir).unwrap();
        let files: Vec<&String> = app.components["hello"].files.keys().collect();
        assert_eq!(
            files,
            ["data/a.json", "static/index.html", "static/sub/x.css"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
