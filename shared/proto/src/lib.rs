//! Protobuf contracts of the CRM suite: prost messages, tonic clients (`client` feature) and
//! servers (`server` feature), and the encoded descriptor set for reflection.

/// Every file of `proto/` and its imports, as an encoded `FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/crm_descriptor.bin"));

/// A generated server whose largest decoded and encoded message can be set: implemented for
/// every server of the suite, so the server builder applies the limits in one place.
pub trait MessageLimits {
    /// Limits decoded requests and encoded responses to `bytes`.
    #[must_use]
    fn with_message_limits(self, bytes: usize) -> Self;
}

#[cfg(feature = "server")]
include!(concat!(env!("OUT_DIR"), "/message_limits.rs"));

/// The output-only fields every standard resource has (AIP-148), as the resource engine sets
/// them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StandardFields {
    /// `organizations/{org}/{collection}/{id}`.
    pub name: String,
    /// Creation.
    pub create_time: Option<prost_types::Timestamp>,
    /// Last change.
    pub update_time: Option<prost_types::Timestamp>,
    /// Soft deletion, when deleted.
    pub delete_time: Option<prost_types::Timestamp>,
    /// When a deleted resource is removed for good.
    pub purge_time: Option<prost_types::Timestamp>,
    /// The revision's etag.
    pub etag: String,
    /// Who created it.
    pub creator: String,
    /// Who changed it last.
    pub last_modifier: String,
}

/// A message with the standard fields: implemented (by the build script) for every message of
/// the suite that has all of them.
pub trait StandardResource {
    /// The resource's name.
    fn name(&self) -> &str;
    /// The etag (sent back on writes).
    fn etag(&self) -> &str;
    /// Sets every standard field.
    fn set_standard(&mut self, fields: StandardFields);
}

include!(concat!(env!("OUT_DIR"), "/standard_resources.rs"));

/// Generated code is not ours to lint.
macro_rules! generated {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $file));
    };
}

/// `crm.*` packages.
pub mod crm {
    /// Shared messages: money, addresses, geo points, the event envelope.
    pub mod common {
        /// Version 1.
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v1 {
            generated!("crm.common.v1.rs");
        }
    }
    /// The identity service.
    pub mod identity {
        /// Version 1.
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v1 {
            generated!("crm.identity.v1.rs");
        }
    }
    /// The CRM core service.
    pub mod core {
        /// Version 1.
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v1 {
            generated!("crm.core.v1.rs");
        }
    }
    /// The field operations service.
    pub mod fieldops {
        /// Version 1.
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v1 {
            generated!("crm.fieldops.v1.rs");
        }
    }
}

/// The `google.*` packages we define ourselves.
pub mod google {
    /// google.api annotations.
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod api {
        generated!("google.api.rs");
    }
    /// google.rpc error model.
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod rpc {
        generated!("google.rpc.rs");
    }
}

pub use crm::common::v1 as common_v1;
pub use crm::core::v1 as core_v1;
pub use crm::fieldops::v1 as fieldops_v1;
pub use crm::identity::v1 as identity_v1;

/// The descriptor set at run time: messages in the proto3 JSON mapping (audit records, the HTTP
/// gateway) and the list of the suite's services.
pub mod json {
    use std::sync::OnceLock;

    use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

    /// The suite's descriptors (every message, service and method), decoded once.
    #[must_use]
    pub fn pool() -> Option<&'static DescriptorPool> {
        static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
        POOL.get_or_init(|| DescriptorPool::decode(super::FILE_DESCRIPTOR_SET).ok())
            .as_ref()
    }

    /// The full names of the suite's services (`crm.*`), sorted.
    #[must_use]
    pub fn service_names() -> Vec<String> {
        let mut names: Vec<String> = pool()
            .map(|p| {
                p.services()
                    .map(|s| s.full_name().to_owned())
                    .filter(|n| n.starts_with("crm."))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `message` as a JSON object keyed by proto field names, every field present (defaults
    /// included) so that changes to and from a default are visible. `None` if the message type
    /// is not in the suite's descriptor set.
    #[must_use]
    pub fn to_value<M: prost::Message + prost::Name>(message: &M) -> Option<serde_json::Value> {
        let descriptor = pool()?.get_message_by_name(&M::full_name())?;
        let dynamic =
            DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).ok()?;
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .skip_default_fields(false);
        dynamic
            .serialize_with_options(serde_json::value::Serializer, &options)
            .ok()
    }

    /// `message` with the top-level `fields` reset to their defaults (redaction), through its
    /// descriptor. `None` if the message type is not in the suite's descriptor set.
    #[must_use]
    pub fn clear_fields<M: prost::Message + prost::Name + Default>(
        message: &M,
        fields: &[&str],
    ) -> Option<M> {
        let descriptor = pool()?.get_message_by_name(&M::full_name())?;
        let mut dynamic =
            DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).ok()?;
        for field in fields {
            dynamic.clear_field_by_name(field);
        }
        M::decode(prost::Message::encode_to_vec(&dynamic).as_slice()).ok()
    }
}
