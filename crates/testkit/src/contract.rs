//! The event contract as a check: validates events against `components.schemas.Event` of the
//! repository's `openapi.yaml`, the JSON Schema that `docs/events.md` describes in prose.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use pagewire_testkit::contract::EventContract;
//!
//! let contract = EventContract::load()?; // parsed and compiled once per process
//! let event = serde_json::json!({"id": "evt_…"});
//! if let Err(errors) = contract.validate(&event) {
//!     println!("{errors}"); // one line per error: `/data/mid: 42 is not of types "null", "string"`
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The YAML is read with `serde_norway` into a `serde_json::Value`, which goes into a
//! [`jsonschema::Registry`] as one draft 2020-12 resource under [`DOCUMENT_URI`]. The validator is
//! built for `{"$ref": "<DOCUMENT_URI>#/components/schemas/Event"}`, so every `$ref` inside the
//! document (`#/components/schemas/MessengerPostbackData`, …) resolves against the whole document,
//! the way OpenAPI 3.1 tools resolve it. Nothing is fetched: retrieval is off, and a `$ref` outside
//! the document fails at load time. Formats (`date-time`) are checked, not just annotated.

use std::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

/// The error of [`EventContract::load`] and friends.
pub type ContractError = Box<dyn Error + Send + Sync>;

/// The URI under which the OpenAPI document is registered. It is never fetched: `.invalid` is a
/// reserved TLD, and retrieval is off.
pub const DOCUMENT_URI: &str = "https://pagewire.invalid/openapi.yaml";

/// The JSON pointer of the event schema inside the OpenAPI document.
pub const EVENT_SCHEMA_POINTER: &str = "/components/schemas/Event";

/// The JSON pointer of the operational event schema (`endpoint.disabled`, …).
pub const OPERATIONAL_SCHEMA_POINTER: &str = "/components/schemas/OperationalEvent";

/// Types whose `data` is `{field, value}`: `<platform>.<field>` for a change field without a type of
/// its own. Their suffix must equal `data.field`, which JSON Schema cannot express.
const FIELD_CHANGE_PLATFORMS: [&str; 3] = ["page.", "instagram.", "whatsapp."];

/// The compiled event schema of an OpenAPI document. Cheap to clone.
#[derive(Clone)]
pub struct EventContract {
    inner: Arc<Inner>,
}

struct Inner {
    validator: Validator,
    /// Present when the document has an `OperationalEvent` schema.
    operational: Option<Validator>,
    document: Value,
    named_types: Vec<String>,
}

impl fmt::Debug for EventContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventContract")
            .field("named_types", &self.inner.named_types.len())
            .finish_non_exhaustive()
    }
}

impl EventContract {
    /// The repository's `openapi.yaml`, parsed and compiled on the first call of the process and
    /// shared afterwards, so tests may call it once each.
    pub fn load() -> Result<Self, ContractError> {
        static SHARED: OnceLock<Result<EventContract, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::from_path(&Self::default_path()).map_err(|err| err.to_string()))
            .clone()
            .map_err(Into::into)
    }

    /// Where [`load`](Self::load) reads the document: `openapi.yaml` at the workspace root.
    pub fn default_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.yaml")
    }

    /// Parses and compiles the document at `path` (not cached).
    pub fn from_path(path: &Path) -> Result<Self, ContractError> {
        let yaml = std::fs::read_to_string(path).map_err(|err| format!("reading {}: {err}", path.display()))?;
        yaml.parse()
    }

    /// Compiles an OpenAPI document already parsed into JSON.
    pub fn from_document(document: Value) -> Result<Self, ContractError> {
        if document.pointer(EVENT_SCHEMA_POINTER).is_none() {
            return Err(format!("the document has no {EVENT_SCHEMA_POINTER}").into());
        }
        let registry = Registry::new()
            .add(DOCUMENT_URI, Draft::Draft202012.create_resource(document.clone()))?
            .prepare()?;
        let compile = |pointer: &str| -> Result<Validator, ContractError> {
            let entry = serde_json::json!({ "$ref": format!("{DOCUMENT_URI}#{pointer}") });
            jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(&registry)
                .offline()
                .should_validate_formats(true)
                .build(&entry)
                .map_err(|err| format!("compiling {pointer}: {err}").into())
        };
        let validator = compile(EVENT_SCHEMA_POINTER)?;
        let operational = match document.pointer(OPERATIONAL_SCHEMA_POINTER) {
            Some(_) => Some(compile(OPERATIONAL_SCHEMA_POINTER)?),
            None => None,
        };
        let named_types = named_types(&document);
        Ok(Self {
            inner: Arc::new(Inner {
                validator,
                operational,
                document,
                named_types,
            }),
        })
    }

    /// Checks one event. The error lists every violation, one per line, each with the JSON pointer
    /// of the offending value (`/data/mid: …`; `/` for the event itself).
    pub fn validate(&self, event: &Value) -> Result<(), String> {
        // Operational events (`endpoint.disabled`, …) have their own schema.
        let operational = event["type"].as_str().is_some_and(|t| {
            ["endpoint.", "delivery.", "subscription."]
                .iter()
                .any(|f| t.starts_with(f))
        });
        let validator = match (operational, &self.inner.operational) {
            (false, _) => &self.inner.validator,
            (true, Some(validator)) => validator,
            (true, None) => return Err(format!("/type: the document has no {OPERATIONAL_SCHEMA_POINTER}")),
        };
        let mut errors: Vec<String> = validator
            .iter_errors(event)
            .map(|error| {
                let path = error.instance_path().to_string();
                format!("{}: {error}", if path.is_empty() { "/" } else { path.as_str() })
            })
            .collect();
        errors.extend(field_change_error(event));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// Like [`validate`](Self::validate), but panics with the errors and the event.
    #[track_caller]
    pub fn assert_valid(&self, event: &Value) {
        if let Err(errors) = self.validate(event) {
            let pretty = serde_json::to_string_pretty(event).unwrap_or_else(|_| event.to_string());
            panic!("the event breaks the event contract:\n{errors}\nevent:\n{pretty}");
        }
    }

    /// Whether the event passes [`validate`](Self::validate).
    pub fn is_valid(&self, event: &Value) -> bool {
        self.validate(event).is_ok()
    }

    /// The event types the schema names with a `data` schema of their own (`messenger.postback`, …),
    /// in document order; the pattern types (`<platform>.unknown`, `page.<field>`, …) are not listed.
    pub fn named_types(&self) -> &[String] {
        &self.inner.named_types
    }

    /// The whole OpenAPI document, as JSON.
    pub fn document(&self) -> &Value {
        &self.inner.document
    }
}

impl FromStr for EventContract {
    type Err = ContractError;

    /// Parses an OpenAPI document in YAML (or JSON, which is YAML) and compiles its event schema.
    fn from_str(yaml: &str) -> Result<Self, Self::Err> {
        let document: Value = serde_norway::from_str(yaml).map_err(|err| format!("parsing the OpenAPI YAML: {err}"))?;
        Self::from_document(document)
    }
}

/// The `const` of every `if: {properties: {type: {const: …}}}` in the event schema's `allOf`.
fn named_types(document: &Value) -> Vec<String> {
    document
        .pointer(&format!("{EVENT_SCHEMA_POINTER}/allOf"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|branch| branch.pointer("/if/properties/type/const")?.as_str())
        .map(str::to_owned)
        .collect()
}

/// `page.<field>` and friends carry `{field, value}`: the field must be the type's suffix.
fn field_change_error(event: &Value) -> Option<String> {
    let event_type = event.get("type")?.as_str()?;
    let field = event.get("data")?.get("field")?.as_str()?;
    let suffix = FIELD_CHANGE_PLATFORMS
        .iter()
        .find_map(|platform| event_type.strip_prefix(platform))?;
    (suffix != field).then(|| format!("/data/field: \"{field}\" is not the type's field \"{suffix}\""))
}
