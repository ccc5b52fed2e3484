//! Protobuf contracts of the CRM suite: prost messages, tonic clients (`client` feature) and
//! servers (`server` feature), and the encoded descriptor set for reflection.

/// Every file of `proto/` and its imports, as an encoded `FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/crm_descriptor.bin"));

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
pub use crm::identity::v1 as identity_v1;
