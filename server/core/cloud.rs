//! Azure clouds and the services a token can be for: each service's token
//! audience per cloud and the host suffixes its tokens may be sent to.

/// An Azure cloud: decides endpoints, host suffixes and token audiences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cloud {
    #[default]
    Public,
    UsGovernment,
    China,
}

/// An upstream service a token can be for. Each has its own audience and the
/// host suffixes its tokens may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    KeyVault,
    Storage,
    DataLakeGen1,
    ResourceManager,
    Sql,
}

impl Service {
    /// The token `resource` (v1 audience) for this service in `cloud`.
    pub fn audience(self, cloud: Cloud) -> &'static str {
        use Cloud::*;
        match (self, cloud) {
            (Service::KeyVault, Public) => "https://vault.azure.net",
            (Service::KeyVault, UsGovernment) => "https://vault.usgovcloudapi.net",
            (Service::KeyVault, China) => "https://vault.azure.cn",
            (Service::Storage, _) => "https://storage.azure.com/",
            (Service::DataLakeGen1, _) => "https://datalake.azure.net/",
            (Service::ResourceManager, Public) => "https://management.azure.com/",
            (Service::ResourceManager, UsGovernment) => "https://management.usgovcloudapi.net/",
            (Service::ResourceManager, China) => "https://management.chinacloudapi.cn/",
            (Service::Sql, Public) => "https://database.windows.net/",
            (Service::Sql, UsGovernment) => "https://database.usgovcloudapi.net/",
            (Service::Sql, China) => "https://database.chinacloudapi.cn/",
        }
    }

    /// Host suffixes (with the leading dot) this service's tokens may go to in
    /// any cloud. ARM is an exact host, listed without a dot.
    pub fn host_suffixes(self) -> &'static [&'static str] {
        match self {
            Service::KeyVault => &[
                ".vault.azure.net",
                ".vault.usgovcloudapi.net",
                ".vault.azure.cn",
                ".managedhsm.azure.net",
            ],
            Service::Storage => &[
                ".blob.core.windows.net",
                ".dfs.core.windows.net",
                ".blob.core.usgovcloudapi.net",
                ".dfs.core.usgovcloudapi.net",
                ".blob.core.chinacloudapi.cn",
                ".dfs.core.chinacloudapi.cn",
            ],
            Service::DataLakeGen1 => &[
                ".azuredatalakestore.net",
                ".azuredatalakestore.usgovcloudapi.net",
            ],
            Service::ResourceManager => &[
                "management.azure.com",
                "management.usgovcloudapi.net",
                "management.chinacloudapi.cn",
            ],
            Service::Sql => &[
                ".database.windows.net",
                ".database.usgovcloudapi.net",
                ".database.chinacloudapi.cn",
            ],
        }
    }

    /// Human name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Service::KeyVault => "Key Vault",
            Service::Storage => "Storage",
            Service::DataLakeGen1 => "ADLS Gen1",
            Service::ResourceManager => "Azure Resource Manager",
            Service::Sql => "Azure SQL",
        }
    }
}
