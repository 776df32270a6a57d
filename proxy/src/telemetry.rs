//! Logging: `WEFT_LOG` filter, `WEFT_LOG_FORMAT`, and a handle to change the filter at run time.

use std::sync::{Arc, Mutex};

use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

use crate::config::LogFormat;

/// Changes the log filter of a running proxy (the admin server's `/log-level`).
#[derive(Clone, Debug)]
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Registry>,
    current: Arc<Mutex<String>>,
}

/// Why a log filter could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// The text is not a filter.
    #[error("not a log filter: {0}")]
    Parse(#[from] tracing_subscriber::filter::ParseError),
    /// The subscriber is gone.
    #[error("the log subscriber is gone: {0}")]
    Reload(#[from] reload::Error),
}

impl LogHandle {
    /// The filter in force.
    pub fn get(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the filter; the old one stays if `filter` does not parse.
    pub fn set(&self, filter: &str) -> Result<(), LogLevelError> {
        let parsed = EnvFilter::try_new(filter)?;
        self.reload.reload(parsed)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = filter.to_string();
        Ok(())
    }
}

/// Installs the global subscriber. `filter` was validated with the rest of the config.
pub fn init(filter: &str, format: LogFormat) -> Result<LogHandle, LogLevelError> {
    let (layer, reload) = reload::Layer::new(EnvFilter::try_new(filter)?);
    let plain =
        (format == LogFormat::Plain).then(|| tracing_subscriber::fmt::layer().with_target(true));
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
    });
    // A second init (a test calling main twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(plain)
        .with(json)
        .try_init();
    Ok(LogHandle {
        reload,
        current: Arc::new(Mutex::new(filter.to_string())),
    })
}
