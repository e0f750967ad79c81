//! Builds one validated [`S3Config`] from the three sources, highest first: command-line flags,
//! environment variables, the `[storage.s3]` table of a TOML file. Defaults fill the rest.

use std::path::Path;

use serde::Deserialize;

use super::CliError;
use super::args::ConnectionArgs;
use super::args::UploadChecksumsArg;
use super::bounds;
use crate::store::config::{RequestOptions, S3Config, UploadChecksums};

/// The parts of a config file scribefs reads. Other top-level tables (a Scribe Ledger config
/// has several) are left alone; unknown keys inside `[storage.s3]` are an error.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    storage: StorageTable,
}

#[derive(Debug, Default, Deserialize)]
struct StorageTable {
    s3: Option<S3Table>,
}

/// Every field optional, so that "not in the file" differs from "the default".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Table {
    bucket: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    path_style: Option<bool>,
    #[serde(default, deserialize_with = "pool_size")]
    pool_size: Option<usize>,
    #[serde(default, deserialize_with = "timeout_secs")]
    timeout_secs: Option<u64>,
    #[serde(default, deserialize_with = "max_retries")]
    max_retries: Option<u32>,
}

// The numbers of `[storage.s3]` get the bounds of their flags (`--pool-size` ...), so that
// `pool_size = 0` or `-1` is refused by name, as `--pool-size 0` is.
fn pool_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    bounded(d, "pool_size", bounds::POOL_SIZE)
}

fn timeout_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bounded(d, "timeout_secs", bounds::TIMEOUT_SECS)
}

fn max_retries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, "max_retries", bounds::MAX_RETRIES)
}

/// A number of the table, as a TOML integer (or a string, as `[mount]` allows), within `bound`.
fn bounded<'de, D, T>(d: D, key: &str, bound: bounds::Bound) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    use serde::de::Error;
    let text = match toml::Value::deserialize(d)? {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::String(s) => s,
        _ => return Err(D::Error::custom(format!("{key} must be a number"))),
    };
    bound.parser::<T>()(&text)
        .map(Some)
        .map_err(|e| D::Error::custom(bounds::describe(&format!("[storage.s3] {key}"), &text, &e)))
}

/// Resolves the configuration; `env` looks up an environment variable (injected for tests).
pub fn resolve(
    args: &ConnectionArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Config, CliError> {
    resolve_over(S3Config::default(), args, env)
}

/// Like [`resolve`], with `defaults` filling what no source sets (a mount retries more than
/// the other commands).
pub fn resolve_over(
    defaults: S3Config,
    args: &ConnectionArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Config, CliError> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => S3Table::default(),
    };
    let from_env = env_table(env)?;
    let mut config = defaults;
    // Lowest precedence first; each later layer overwrites what it sets.
    for layer in [file, from_env, flags_table(args)] {
        apply(&mut config, layer);
    }
    config.profile = args.profile.clone();
    config.no_sign_request = args.no_sign_request;
    config.check_etag_md5 = !args.no_etag_check;
    config.upload_checksums = match args.upload_checksums {
        UploadChecksumsArg::Crc32c => UploadChecksums::Crc32c,
        UploadChecksumsArg::Md5 => UploadChecksums::Md5,
        UploadChecksumsArg::Off => UploadChecksums::Off,
    };
    config.requests = RequestOptions {
        sse: args.sse.clone(),
        sse_kms_key_id: args.sse_kms_key_id.clone(),
        storage_class: args.storage_class.clone(),
        requester_pays: args.requester_pays,
        expected_bucket_owner: args.expected_bucket_owner.clone(),
        user_agent_prefix: args.user_agent_prefix.clone(),
    };
    config
        .validate()
        .map_err(|e| CliError::Config(e.to_string()))?;
    Ok(config)
}

/// Whether a file holding a secret can be read by users other than its owner.
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

fn read_file(path: &Path) -> Result<S3Table, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("cannot read {}: {e}", path.display())))?;
    let file: ConfigFile =
        toml::from_str(&text).map_err(|e| CliError::Config(toml_error(path, &text, &e)))?;
    let table = file.storage.s3.unwrap_or_default();
    if table.secret_access_key.is_some() && readable_by_others(path) {
        tracing::warn!(
            "{} holds a secret access key but is readable by other users: chmod 600 it",
            path.display()
        );
    }
    Ok(table)
}

fn first(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()))
}

fn env_table(env: &dyn Fn(&str) -> Option<String>) -> Result<S3Table, CliError> {
    let path_style = match first(env, &["S3_PATH_STYLE"]) {
        None => None,
        Some(v) => Some(parse_bool(&v).ok_or_else(|| {
            CliError::Config(format!("S3_PATH_STYLE={v:?} is not true/false/1/0"))
        })?),
    };
    Ok(S3Table {
        bucket: first(env, &["S3_BUCKET"]),
        region: first(env, &["S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"]),
        endpoint: first(
            env,
            &["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
        ),
        access_key_id: first(env, &["S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]),
        secret_access_key: first(env, &["S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"]),
        path_style,
        ..Default::default()
    })
}

fn flags_table(args: &ConnectionArgs) -> S3Table {
    S3Table {
        bucket: args.bucket.clone(),
        region: args.region.clone(),
        endpoint: args.endpoint_url.clone(),
        path_style: args.force_path_style.then_some(true),
        pool_size: args.pool_size,
        timeout_secs: args.timeout_secs,
        max_retries: args.max_retries,
        ..Default::default()
    }
}

fn apply(config: &mut S3Config, layer: S3Table) {
    if let Some(v) = layer.bucket {
        config.bucket = v;
    }
    if let Some(v) = layer.region {
        config.region = Some(v);
    }
    if let Some(v) = layer.endpoint {
        config.endpoint = Some(v);
    }
    // Keys travel as a pair: a layer that names one replaces both.
    if layer.access_key_id.is_some() || layer.secret_access_key.is_some() {
        config.access_key_id = layer.access_key_id;
        config.secret_access_key = layer.secret_access_key;
    }
    if let Some(v) = layer.path_style {
        config.path_style = v;
    }
    if let Some(v) = layer.pool_size {
        config.pool_size = v;
    }
    if let Some(v) = layer.timeout_secs {
        config.timeout_secs = v;
    }
    if let Some(v) = layer.max_retries {
        config.max_retries = v;
    }
}

/// A TOML error as one line, with the line and key it is about: some of toml's messages
/// ("number too large to fit in target type") name neither. The line itself is not shown: it
/// may hold a secret key.
pub(crate) fn toml_error(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let message = error.message().replace('\n', " ");
    let Some(span) = error.span() else {
        return format!("{}: {message}", path.display());
    };
    let before = text.get(..span.start).unwrap_or(text);
    let number = before.matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or("");
    match line.split_once('=') {
        // Our own messages (the bounds of a number) name the key already.
        Some((key, _)) if !key.trim().is_empty() && !message.contains(key.trim()) => {
            format!(
                "{} line {number} ({}): {message}",
                path.display(),
                key.trim()
            )
        }
        _ => format!("{} line {number}: {message}", path.display()),
    }
}

pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = file_with(
            "[node]\nid = 1\n[storage.s3]\nbucket = \"from-file\"\nregion = \"eu-west-1\"\n\
             pool_size = 4\nmax_retries = 5\nendpoint = \"http://file:1\"\n",
        );
        let mut args = ConnectionArgs {
            config: Some(file.path().into()),
            ..Default::default()
        };
        let env = env_of(&[("S3_BUCKET", "from-env"), ("AWS_REGION", "ap-south-1")]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(config.bucket, "from-env");
        assert_eq!(config.region.as_deref(), Some("ap-south-1"));
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.max_retries, 5);
        assert_eq!(config.timeout_secs, 30);
        assert_eq!(config.endpoint.as_deref(), Some("http://file:1"));
        args.bucket = Some("from-flag".into());
        args.max_retries = Some(8);
        args.endpoint_url = Some("http://flag:2".into());
        let config = resolve(&args, &env).unwrap();
        assert_eq!(config.bucket, "from-flag");
        assert_eq!(config.max_retries, 8);
        assert_eq!(config.endpoint.as_deref(), Some("http://flag:2"));
    }

    #[test]
    fn s3_variables_beat_aws_variables() {
        let env = env_of(&[
            ("S3_BUCKET", "b"),
            ("S3_REGION", "r1"),
            ("AWS_REGION", "r2"),
            ("AWS_ACCESS_KEY_ID", "aws-key"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
            ("S3_PATH_STYLE", "true"),
        ]);
        let config = resolve(&ConnectionArgs::default(), &env).unwrap();
        assert_eq!(config.region.as_deref(), Some("r1"));
        assert_eq!(config.access_key_id.as_deref(), Some("aws-key"));
        assert!(config.path_style);
        let bad = env_of(&[("S3_BUCKET", "b"), ("S3_PATH_STYLE", "maybe")]);
        assert!(resolve(&ConnectionArgs::default(), &bad).is_err());
    }

    #[test]
    fn the_etag_check_is_on_unless_no_etag_check_is_given() {
        let env = env_of(&[("S3_BUCKET", "b")]);
        assert!(
            resolve(&ConnectionArgs::default(), &env)
                .unwrap()
                .check_etag_md5
        );
        let args = ConnectionArgs {
            no_etag_check: true,
            ..Default::default()
        };
        assert!(!resolve(&args, &env).unwrap().check_etag_md5);
    }

    #[test]
    fn empty_bucket_is_an_error_naming_bucket() {
        let err = resolve(&ConnectionArgs::default(), &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("bucket"), "{err}");
        let file = file_with("[storage.s3]\nbucket = \"\"\n");
        let args = ConnectionArgs {
            config: Some(file.path().into()),
            ..Default::default()
        };
        assert!(
            resolve(&args, &env_of(&[]))
                .unwrap_err()
                .to_string()
                .contains("bucket")
        );
    }

    #[test]
    fn numbers_of_the_s3_table_have_the_flags_bounds() {
        for (line, key) in [
            ("pool_size = 0", "pool_size"),
            ("pool_size = -1", "pool_size"),
            ("timeout_secs = 0", "timeout_secs"),
            ("timeout_secs = 99999999999", "timeout_secs"),
            ("max_retries = -1", "max_retries"),
            ("max_retries = 101", "max_retries"),
            ("max_retries = nan", "max_retries"),
            ("max_retries = \"many\"", "max_retries"),
        ] {
            let file = file_with(&format!("[storage.s3]\nbucket = \"b\"\n{line}\n"));
            let args = ConnectionArgs {
                config: Some(file.path().into()),
                ..Default::default()
            };
            let err = resolve(&args, &env_of(&[])).unwrap_err().to_string();
            assert!(
                err.contains(&format!("[storage.s3] {key} ")),
                "{line}: {err}"
            );
            assert!(!err.contains('\n'), "{line}: {err}");
        }
        let file = file_with("[storage.s3]\nbucket = \"b\"\npool_size = 4096\nmax_retries = 0\n");
        let args = ConnectionArgs {
            config: Some(file.path().into()),
            ..Default::default()
        };
        let config = resolve(&args, &env_of(&[])).unwrap();
        assert_eq!((config.pool_size, config.max_retries), (4096, 0));
    }

    #[test]
    fn unknown_keys_in_the_s3_table_are_errors() {
        let file = file_with("[storage.s3]\nbucket = \"b\"\nbukket = \"typo\"\n");
        let args = ConnectionArgs {
            config: Some(file.path().into()),
            ..Default::default()
        };
        let err = resolve(&args, &env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("bukket"), "{err}");
        let missing = ConnectionArgs {
            config: Some("/nonexistent/scribefs.toml".into()),
            ..Default::default()
        };
        assert!(
            resolve(&missing, &env_of(&[]))
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}
