//! The declarative REST profile: how a PRM's JSON API is called, as validated from `[rest]` TOML.

use std::collections::BTreeMap;

use reqwest::Url;
use secrecy::SecretString;

/// How list pages follow each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// The response names the next page's token in `next_field`; it is sent back as `param`.
    PageToken { param: String, next_field: String },
    /// `param` counts items to skip; the last page is shorter than the page size.
    Offset { param: String },
}

/// How the updated-since filter is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinceFormat {
    EpochMs,
    Rfc3339,
}

/// HTTP method for upserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertMethod {
    Put,
    Patch,
    Post,
}

/// One object (e.g. `deals`) of the PRM.
#[derive(Debug, Clone)]
pub struct RestObject {
    /// Path under the base URL, e.g. `/deals`.
    pub list_path: String,
    /// Path with `{id}`, e.g. `/deals/{id}`; `None`: the object is read-only.
    pub upsert_path: Option<String>,
    pub upsert_method: UpsertMethod,
    /// Dotted path to the items array in a list response, e.g. `data.results`.
    pub items_field: String,
    pub id_field: String,
    /// The field holding the modification time (epoch ms or RFC 3339).
    pub cursor_field: String,
    pub since_param: String,
    pub since_format: SinceFormat,
    pub limit_param: String,
    pub paging: Paging,
}

/// A PRM reachable by the generic `rest` connector.
#[derive(Clone)]
pub struct RestProfile {
    pub base_url: Url,
    pub auth_header: String,
    /// The header value with the secret already put into the template.
    pub auth_value: SecretString,
    pub page_size: u32,
    pub objects: BTreeMap<String, RestObject>,
}

impl std::fmt::Debug for RestProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestProfile")
            .field("base_url", &self.base_url.as_str())
            .field("auth_header", &self.auth_header)
            .field("page_size", &self.page_size)
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}
