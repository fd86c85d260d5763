//! The standard `OTEL_*` variables, read and checked before anything starts: a bad value is one
//! line naming the variable (and exit 2 in the binary), like every other configuration error.

use std::path::PathBuf;

/// The endpoint when tracing is on and none is set (an OpenTelemetry Collector's OTLP/gRPC port).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";

/// The `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "ringlimit";

/// An `OTEL_*` value that cannot be used, or an exporter that cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// A variable has a value this build cannot use.
    #[error("invalid configuration: {variable} = '{value}': {reason}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used, and what can.
        reason: String,
    },
    /// A file named by a variable cannot be read.
    #[error("invalid configuration: {variable} = '{path}': cannot read: {reason}")]
    File {
        /// The variable.
        variable: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The exporter could not be built.
    #[error("cannot start tracing: {0}")]
    Start(String),
}

/// The OTLP transport (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (the only one this build exports with).
    Grpc,
}

/// Which traces are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), as the
/// specification names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with the ratio.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default): follow the caller's decision, keep new traces.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio` with the ratio for new traces.
    ParentBasedTraceIdRatio(f64),
}

/// Tracing as the `OTEL_*` variables configure it.
#[derive(Debug, Clone, PartialEq)]
pub enum TracingSettings {
    /// No spans, no exporter (the default).
    Off,
    /// Spans exported over OTLP.
    Otlp(OtlpSettings),
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The collector's URL (`http://` plaintext, `https://` TLS).
    pub endpoint: String,
    /// The variable that set [`OtlpSettings::endpoint`] (`None`: the default).
    pub endpoint_variable: Option<&'static str>,
    /// The transport.
    pub protocol: Protocol,
    /// `service.name`.
    pub service_name: String,
    /// Other resource attributes (`OTEL_RESOURCE_ATTRIBUTES`), in order.
    pub resource_attributes: Vec<(String, String)>,
    /// The sampler.
    pub sampler: Sampler,
    /// A PEM file of CAs that verify an `https://` collector, besides the system's
    /// (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub certificate: Option<PathBuf>,
    /// The client certificate and key (PEM) for a collector that asks for one
    /// (`OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE`, `..._CLIENT_KEY`).
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

impl TracingSettings {
    /// Reads the `OTEL_*` variables of the process (see the module docs for the rule).
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`TracingSettings::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        // Set and not blank: the specification treats an empty value as unset.
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
            return Ok(Self::Off);
        }
        let endpoint_variable = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find(|name| set(name).is_some());
        match set("OTEL_TRACES_EXPORTER") {
            None if endpoint_variable.is_none() => return Ok(Self::Off),
            None => {}
            Some(exporters) => {
                let mut otlp = false;
                for exporter in exporters.split(',').map(str::trim) {
                    match exporter.to_ascii_lowercase().as_str() {
                        "none" => return Ok(Self::Off),
                        "otlp" => otlp = true,
                        "" => {}
                        _ => {
                            return Err(invalid(
                                "OTEL_TRACES_EXPORTER",
                                &exporters,
                                "this build exports traces with 'otlp' only ('none' turns tracing off)",
                            ));
                        }
                    }
                }
                if !otlp && endpoint_variable.is_none() {
                    return Ok(Self::Off);
                }
            }
        }

        let endpoint = match endpoint_variable {
            Some(name) => {
                let value = set(name).unwrap_or_default().trim().to_string();
                check_endpoint(name, &value)?;
                value
            }
            None => DEFAULT_ENDPOINT.to_string(),
        };
        let protocol = match [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| set(name).map(|value| (name, value)))
        {
            None => Protocol::Grpc,
            // `otlp` is what Gubernator's example configuration uses for gRPC.
            Some((_, value)) if matches!(value.trim(), "grpc" | "otlp") => Protocol::Grpc,
            Some((name, value)) => {
                return Err(invalid(
                    name,
                    &value,
                    "this build exports over 'grpc' only (http/protobuf and http/json are not built in)",
                ));
            }
        };
        let resource_attributes = match set("OTEL_RESOURCE_ATTRIBUTES") {
            Some(value) => parse_resource_attributes(&value)?,
            None => Vec::new(),
        };
        let service_name = set("OTEL_SERVICE_NAME")
            .map(|name| name.trim().to_string())
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(key, _)| key == "service.name")
                    .map(|(_, value)| value.clone())
            })
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        let sampler = parse_sampler(set("OTEL_TRACES_SAMPLER"), set("OTEL_TRACES_SAMPLER_ARG"))?;
        let certificate = [
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ]
        .into_iter()
        .find_map(|name| set(name).map(|path| readable(name, path.trim())))
        .transpose()?;
        let client_certificate = [
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ]
        .into_iter()
        .find_map(|name| set(name).map(|path| (name, readable(name, path.trim()))));
        let client_key = [
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ]
        .into_iter()
        .find_map(|name| set(name).map(|path| (name, readable(name, path.trim()))));
        let client_identity = match (client_certificate, client_key) {
            (None, None) => None,
            (Some((_, certificate)), Some((_, key))) => Some((certificate?, key?)),
            (Some((name, path)), None) | (None, Some((name, path))) => {
                return Err(invalid(
                    name,
                    &path?.display().to_string(),
                    "a client certificate and its key are set together \
                     (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)",
                ));
            }
        };
        Ok(Self::Otlp(OtlpSettings {
            endpoint,
            endpoint_variable,
            protocol,
            service_name,
            resource_attributes,
            sampler,
            certificate,
            client_identity,
        }))
    }

    /// Whether spans are to be exported.
    pub fn is_on(&self) -> bool {
        matches!(self, Self::Otlp(_))
    }
}

fn invalid(variable: &'static str, value: &str, reason: &str) -> TelemetryError {
    TelemetryError::Invalid {
        variable,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// An `http://` or `https://` URL with a host.
fn check_endpoint(variable: &'static str, value: &str) -> Result<(), TelemetryError> {
    let uri: http::Uri = value.parse().map_err(|error: http::uri::InvalidUri| {
        invalid(variable, value, &format!("not a URL: {error}"))
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        _ => Err(invalid(
            variable,
            value,
            "expected an http:// or https:// URL with a host, such as http://otel-collector:4317",
        )),
    }
}

/// A file that exists and can be read (its content is checked when the exporter starts).
fn readable(variable: &'static str, path: &str) -> Result<PathBuf, TelemetryError> {
    std::fs::File::open(path)
        .map(|_| PathBuf::from(path))
        .map_err(|error| TelemetryError::File {
            variable,
            path: path.to_string(),
            reason: error.to_string(),
        })
}

/// `key1=value1,key2=value2`, values percent-decoded (the specification's format).
fn parse_resource_attributes(value: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    let mut attributes = Vec::new();
    for pair in value.split(',').filter(|pair| !pair.trim().is_empty()) {
        let Some((key, item)) = pair.split_once('=') else {
            return Err(invalid(
                "OTEL_RESOURCE_ATTRIBUTES",
                value,
                &format!("'{}' is not key=value", pair.trim()),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(
                "OTEL_RESOURCE_ATTRIBUTES",
                value,
                &format!("'{}' has an empty key", pair.trim()),
            ));
        }
        let decoded = percent_decode(item.trim()).ok_or_else(|| {
            invalid(
                "OTEL_RESOURCE_ATTRIBUTES",
                value,
                &format!("the value of '{key}' is not valid percent-encoded UTF-8"),
            )
        })?;
        attributes.push((key.to_string(), decoded));
    }
    Ok(attributes)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn parse_sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, TelemetryError> {
    let Some(name) = name else {
        return Ok(Sampler::ParentBasedAlwaysOn);
    };
    let ratio = || -> Result<f64, TelemetryError> {
        match &arg {
            None => Ok(1.0),
            Some(arg) => match arg.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
                _ => Err(invalid(
                    "OTEL_TRACES_SAMPLER_ARG",
                    arg,
                    "expected a ratio between 0 and 1, such as 0.25",
                )),
            },
        }
    };
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatio(ratio()?),
        "parentbased_always_on" => Sampler::ParentBasedAlwaysOn,
        "parentbased_always_off" => Sampler::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => Sampler::ParentBasedTraceIdRatio(ratio()?),
        _ => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                &name,
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<TracingSettings, TelemetryError> {
        TracingSettings::from_vars(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    fn otlp(vars: &[(&str, &str)]) -> OtlpSettings {
        match settings(vars) {
            Ok(TracingSettings::Otlp(otlp)) => otlp,
            other => panic!("expected OTLP, got {other:?}"),
        }
    }

    #[test]
    fn off_unless_an_exporter_or_an_endpoint_is_set() {
        assert_eq!(settings(&[]), Ok(TracingSettings::Off));
        assert_eq!(
            settings(&[("OTEL_SERVICE_NAME", "x")]),
            Ok(TracingSettings::Off)
        );
        assert_eq!(
            settings(&[("OTEL_TRACES_EXPORTER", "")]),
            Ok(TracingSettings::Off)
        );
        assert_eq!(
            otlp(&[("OTEL_TRACES_EXPORTER", "otlp")]).endpoint,
            DEFAULT_ENDPOINT
        );
        let from_endpoint = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        assert_eq!(from_endpoint.endpoint, "http://collector:4317");
        assert_eq!(
            from_endpoint.endpoint_variable,
            Some("OTEL_EXPORTER_OTLP_ENDPOINT")
        );
        let traces = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://b:4317"),
        ]);
        assert_eq!(traces.endpoint, "https://b:4317");
    }

    #[test]
    fn none_and_sdk_disabled_win_over_an_endpoint() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(TracingSettings::Off)
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]),
            Ok(TracingSettings::Off)
        );
        assert!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).is_ok_and(|s| s.is_on()));
    }

    #[test]
    fn defaults() {
        let otlp = otlp(&[("OTEL_TRACES_EXPORTER", "otlp")]);
        assert_eq!(otlp.service_name, "ringlimit");
        assert_eq!(otlp.sampler, Sampler::ParentBasedAlwaysOn);
        assert_eq!(otlp.protocol, Protocol::Grpc);
        assert!(otlp.resource_attributes.is_empty());
        assert_eq!(otlp.certificate, None);
    }

    #[test]
    fn service_name_and_resource_attributes() {
        let on = ("OTEL_TRACES_EXPORTER", "otlp");
        let attributes = (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod, service.name=from-attributes,team=rate%20limits",
        );
        let from_attributes = otlp(&[on, attributes]);
        assert_eq!(from_attributes.service_name, "from-attributes");
        assert_eq!(
            from_attributes.resource_attributes[2],
            ("team".to_string(), "rate limits".to_string())
        );
        let named = otlp(&[on, attributes, ("OTEL_SERVICE_NAME", "edge-limits")]);
        assert_eq!(named.service_name, "edge-limits");
    }

    #[test]
    fn samplers() {
        let on = ("OTEL_TRACES_EXPORTER", "otlp");
        let sampler = |name, arg: Option<&'static str>| {
            let mut vars = vec![on, ("OTEL_TRACES_SAMPLER", name)];
            vars.extend(arg.map(|arg| ("OTEL_TRACES_SAMPLER_ARG", arg)));
            settings(&vars).map(|settings| match settings {
                TracingSettings::Otlp(otlp) => otlp.sampler,
                TracingSettings::Off => panic!("off"),
            })
        };
        assert_eq!(sampler("always_on", None), Ok(Sampler::AlwaysOn));
        assert_eq!(sampler("always_off", Some("0.5")), Ok(Sampler::AlwaysOff));
        assert_eq!(
            sampler("traceidratio", None),
            Ok(Sampler::TraceIdRatio(1.0))
        );
        assert_eq!(
            sampler("parentbased_traceidratio", Some("0.25")),
            Ok(Sampler::ParentBasedTraceIdRatio(0.25))
        );
        assert_eq!(
            sampler("parentbased_always_off", None),
            Ok(Sampler::ParentBasedAlwaysOff)
        );
        assert!(sampler("traceidratio", Some("1.5")).is_err());
        assert!(sampler("traceidratio", Some("half")).is_err());
        assert!(sampler("jaeger_remote", None).is_err());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let on = ("OTEL_TRACES_EXPORTER", "otlp");
        let cases: [(&[(&str, &str)], &str); 7] = [
            (
                &[("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c:1")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[on, ("OTEL_RESOURCE_ATTRIBUTES", "a=1,b")],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (
                &[on, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                &[
                    on,
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
                ],
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
        ];
        for (vars, variable) in cases {
            let error = settings(vars).expect_err(variable).to_string();
            assert!(
                error.starts_with(&format!("invalid configuration: {variable} = '")),
                "{error}"
            );
        }
    }

    #[test]
    fn gubernators_otlp_protocol_means_grpc() {
        let otlp = otlp(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "otlp"),
        ]);
        assert_eq!(otlp.protocol, Protocol::Grpc);
    }
}
