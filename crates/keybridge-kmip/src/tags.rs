//! KMIP tags and enumeration values, KMIP 1.0 to 1.4 and 2.0.
//!
//! Tag values and the set of enumerations follow the KMIP specifications
//! (cross-checked against PyKMIP 0.11's `kmip/core/enums.py`). Names are the
//! spec's names normalised the way the KMIP XML and JSON encodings do it:
//! words run together, each capitalised, other punctuation becomes `_`
//! ("Request Message" → `RequestMessage`, "X.509 Certificate Identifier" →
//! `X_509CertificateIdentifier`, "3DES" → `DES3`).
//!
//! Everything is table-driven: one sorted slice of `(tag, name)` and one
//! `(value, name)` slice per enumeration, each generated with its constants
//! by a small macro so the two cannot drift apart.

use std::fmt;

/// A KMIP tag (three bytes, normally `0x42xxxx`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u32);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match tag_name(*self) {
            Some(n) => write!(f, "{n}(0x{:06X})", self.0),
            None => write!(f, "0x{:06X}", self.0),
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match tag_name(*self) {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:06X}", self.0),
        }
    }
}


macro_rules! tags {
    ($($name:ident = $value:literal => $text:literal,)*) => {
        $(pub const $name: Tag = Tag($value);)*
        /// Every known tag and its name, sorted by tag.
        static TAGS: &[(Tag, &str)] = &[$(($name, $text),)*];
    };
}

tags! {
    // KMIP 1.0
    ACTIVATION_DATE = 0x420001 => "ActivationDate",
    APPLICATION_DATA = 0x420002 => "ApplicationData",
    APPLICATION_NAMESPACE = 0x420003 => "ApplicationNamespace",
    APPLICATION_SPECIFIC_INFORMATION = 0x420004 => "ApplicationSpecificInformation",
    ARCHIVE_DATE = 0x420005 => "ArchiveDate",
    ASYNCHRONOUS_CORRELATION_VALUE = 0x420006 => "AsynchronousCorrelationValue",
    ASYNCHRONOUS_INDICATOR = 0x420007 => "AsynchronousIndicator",
    ATTRIBUTE = 0x420008 => "Attribute",
    ATTRIBUTE_INDEX = 0x420009 => "AttributeIndex",
    ATTRIBUTE_NAME = 0x42000A => "AttributeName",
    ATTRIBUTE_VALUE = 0x42000B => "AttributeValue",
    AUTHENTICATION = 0x42000C => "Authentication",
    BATCH_COUNT = 0x42000D => "BatchCount",
    BATCH_ERROR_CONTINUATION_OPTION = 0x42000E => "BatchErrorContinuationOption",
    BATCH_ITEM = 0x42000F => "BatchItem",
    BATCH_ORDER_OPTION = 0x420010 => "BatchOrderOption",
    BLOCK_CIPHER_MODE = 0x420011 => "BlockCipherMode",
    CANCELLATION_RESULT = 0x420012 => "CancellationResult",
    CERTIFICATE = 0x420013 => "Certificate",
    CERTIFICATE_IDENTIFIER = 0x420014 => "CertificateIdentifier",
    CERTIFICATE_ISSUER = 0x420015 => "CertificateIssuer",
    CERTIFICATE_ISSUER_ALTERNATIVE_NAME = 0x420016 => "CertificateIssuerAlternativeName",
    CERTIFICATE_ISSUER_DISTINGUISHED_NAME = 0x420017 => "CertificateIssuerDistinguishedName",
    CERTIFICATE_REQUEST = 0x420018 => "CertificateRequest",
    CERTIFICATE_REQUEST_TYPE = 0x420019 => "CertificateRequestType",
    CERTIFICATE_SUBJECT = 0x42001A => "CertificateSubject",
    CERTIFICATE_SUBJECT_ALTERNATIVE_NAME = 0x42001B => "CertificateSubjectAlternativeName",
    CERTIFICATE_SUBJECT_DISTINGUISHED_NAME = 0x42001C => "CertificateSubjectDistinguishedName",
    CERTIFICATE_TYPE = 0x42001D => "CertificateType",
    CERTIFICATE_VALUE = 0x42001E => "CertificateValue",
    COMMON_TEMPLATE_ATTRIBUTE = 0x42001F => "CommonTemplateAttribute",
    COMPROMISE_DATE = 0x420020 => "CompromiseDate",
    COMPROMISE_OCCURRENCE_DATE = 0x420021 => "CompromiseOccurrenceDate",
    CONTACT_INFORMATION = 0x420022 => "ContactInformation",
    CREDENTIAL = 0x420023 => "Credential",
    CREDENTIAL_TYPE = 0x420024 => "CredentialType",
    CREDENTIAL_VALUE = 0x420025 => "CredentialValue",
    CRITICALITY_INDICATOR = 0x420026 => "CriticalityIndicator",
    CRT_COEFFICIENT = 0x420027 => "CRTCoefficient",
    CRYPTOGRAPHIC_ALGORITHM = 0x420028 => "CryptographicAlgorithm",
    CRYPTOGRAPHIC_DOMAIN_PARAMETERS = 0x420029 => "CryptographicDomainParameters",
    CRYPTOGRAPHIC_LENGTH = 0x42002A => "CryptographicLength",
    CRYPTOGRAPHIC_PARAMETERS = 0x42002B => "CryptographicParameters",
    CRYPTOGRAPHIC_USAGE_MASK = 0x42002C => "CryptographicUsageMask",
    CUSTOM_ATTRIBUTE = 0x42002D => "CustomAttribute",
    D = 0x42002E => "D",
    DEACTIVATION_DATE = 0x42002F => "DeactivationDate",
    DERIVATION_DATA = 0x420030 => "DerivationData",
    DERIVATION_METHOD = 0x420031 => "DerivationMethod",
    DERIVATION_PARAMETERS = 0x420032 => "DerivationParameters",
    DESTROY_DATE = 0x420033 => "DestroyDate",
    DIGEST = 0x420034 => "Digest",
    DIGEST_VALUE = 0x420035 => "DigestValue",
    ENCRYPTION_KEY_INFORMATION = 0x420036 => "EncryptionKeyInformation",
    G = 0x420037 => "G",
    HASHING_ALGORITHM = 0x420038 => "HashingAlgorithm",
    INITIAL_DATE = 0x420039 => "InitialDate",
    INITIALIZATION_VECTOR = 0x42003A => "InitializationVector",
    ISSUER = 0x42003B => "Issuer",
    ITERATION_COUNT = 0x42003C => "IterationCount",
    IV_COUNTER_NONCE = 0x42003D => "IVCounterNonce",
    J = 0x42003E => "J",
    KEY = 0x42003F => "Key",
    KEY_BLOCK = 0x420040 => "KeyBlock",
    KEY_COMPRESSION_TYPE = 0x420041 => "KeyCompressionType",
    KEY_FORMAT_TYPE = 0x420042 => "KeyFormatType",
    KEY_MATERIAL = 0x420043 => "KeyMaterial",
    KEY_PART_IDENTIFIER = 0x420044 => "KeyPartIdentifier",
    KEY_VALUE = 0x420045 => "KeyValue",
    KEY_WRAPPING_DATA = 0x420046 => "KeyWrappingData",
    KEY_WRAPPING_SPECIFICATION = 0x420047 => "KeyWrappingSpecification",
    LAST_CHANGE_DATE = 0x420048 => "LastChangeDate",
    LEASE_TIME = 0x420049 => "LeaseTime",
    LINK = 0x42004A => "Link",
    LINK_TYPE = 0x42004B => "LinkType",
    LINKED_OBJECT_IDENTIFIER = 0x42004C => "LinkedObjectIdentifier",
    MAC_SIGNATURE = 0x42004D => "MACSignature",
    MAC_SIGNATURE_KEY_INFORMATION = 0x42004E => "MACSignatureKeyInformation",
    MAXIMUM_ITEMS = 0x42004F => "MaximumItems",
    MAXIMUM_RESPONSE_SIZE = 0x420050 => "MaximumResponseSize",
    MESSAGE_EXTENSION = 0x420051 => "MessageExtension",
    MODULUS = 0x420052 => "Modulus",
    NAME = 0x420053 => "Name",
    NAME_TYPE = 0x420054 => "NameType",
    NAME_VALUE = 0x420055 => "NameValue",
    OBJECT_GROUP = 0x420056 => "ObjectGroup",
    OBJECT_TYPE = 0x420057 => "ObjectType",
    OFFSET = 0x420058 => "Offset",
    OPAQUE_DATA_TYPE = 0x420059 => "OpaqueDataType",
    OPAQUE_DATA_VALUE = 0x42005A => "OpaqueDataValue",
    OPAQUE_OBJECT = 0x42005B => "OpaqueObject",
    OPERATION = 0x42005C => "Operation",
    OPERATION_POLICY_NAME = 0x42005D => "OperationPolicyName",
    P = 0x42005E => "P",
    PADDING_METHOD = 0x42005F => "PaddingMethod",
    PRIME_EXPONENT_P = 0x420060 => "PrimeExponentP",
    PRIME_EXPONENT_Q = 0x420061 => "PrimeExponentQ",
    PRIME_FIELD_SIZE = 0x420062 => "PrimeFieldSize",
    PRIVATE_EXPONENT = 0x420063 => "PrivateExponent",
    PRIVATE_KEY = 0x420064 => "PrivateKey",
    PRIVATE_KEY_TEMPLATE_ATTRIBUTE = 0x420065 => "PrivateKeyTemplateAttribute",
    PRIVATE_KEY_UNIQUE_IDENTIFIER = 0x420066 => "PrivateKeyUniqueIdentifier",
    PROCESS_START_DATE = 0x420067 => "ProcessStartDate",
    PROTECT_STOP_DATE = 0x420068 => "ProtectStopDate",
    PROTOCOL_VERSION = 0x420069 => "ProtocolVersion",
    PROTOCOL_VERSION_MAJOR = 0x42006A => "ProtocolVersionMajor",
    PROTOCOL_VERSION_MINOR = 0x42006B => "ProtocolVersionMinor",
    PUBLIC_EXPONENT = 0x42006C => "PublicExponent",
    PUBLIC_KEY = 0x42006D => "PublicKey",
    PUBLIC_KEY_TEMPLATE_ATTRIBUTE = 0x42006E => "PublicKeyTemplateAttribute",
    PUBLIC_KEY_UNIQUE_IDENTIFIER = 0x42006F => "PublicKeyUniqueIdentifier",
    PUT_FUNCTION = 0x420070 => "PutFunction",
    Q = 0x420071 => "Q",
    Q_STRING = 0x420072 => "QString",
    QLENGTH = 0x420073 => "QLength",
    QUERY_FUNCTION = 0x420074 => "QueryFunction",
    RECOMMENDED_CURVE = 0x420075 => "RecommendedCurve",
    REPLACED_UNIQUE_IDENTIFIER = 0x420076 => "ReplacedUniqueIdentifier",
    REQUEST_HEADER = 0x420077 => "RequestHeader",
    REQUEST_MESSAGE = 0x420078 => "RequestMessage",
    REQUEST_PAYLOAD = 0x420079 => "RequestPayload",
    RESPONSE_HEADER = 0x42007A => "ResponseHeader",
    RESPONSE_MESSAGE = 0x42007B => "ResponseMessage",
    RESPONSE_PAYLOAD = 0x42007C => "ResponsePayload",
    RESULT_MESSAGE = 0x42007D => "ResultMessage",
    RESULT_REASON = 0x42007E => "ResultReason",
    RESULT_STATUS = 0x42007F => "ResultStatus",
    REVOCATION_MESSAGE = 0x420080 => "RevocationMessage",
    REVOCATION_REASON = 0x420081 => "RevocationReason",
    REVOCATION_REASON_CODE = 0x420082 => "RevocationReasonCode",
    KEY_ROLE_TYPE = 0x420083 => "KeyRoleType",
    SALT = 0x420084 => "Salt",
    SECRET_DATA = 0x420085 => "SecretData",
    SECRET_DATA_TYPE = 0x420086 => "SecretDataType",
    SERIAL_NUMBER = 0x420087 => "SerialNumber",
    SERVER_INFORMATION = 0x420088 => "ServerInformation",
    SPLIT_KEY = 0x420089 => "SplitKey",
    SPLIT_KEY_METHOD = 0x42008A => "SplitKeyMethod",
    SPLIT_KEY_PARTS = 0x42008B => "SplitKeyParts",
    SPLIT_KEY_THRESHOLD = 0x42008C => "SplitKeyThreshold",
    STATE = 0x42008D => "State",
    STORAGE_STATUS_MASK = 0x42008E => "StorageStatusMask",
    SYMMETRIC_KEY = 0x42008F => "SymmetricKey",
    TEMPLATE = 0x420090 => "Template",
    TEMPLATE_ATTRIBUTE = 0x420091 => "TemplateAttribute",
    TIME_STAMP = 0x420092 => "TimeStamp",
    UNIQUE_BATCH_ITEM_ID = 0x420093 => "UniqueBatchItemID",
    UNIQUE_IDENTIFIER = 0x420094 => "UniqueIdentifier",
    USAGE_LIMITS = 0x420095 => "UsageLimits",
    USAGE_LIMITS_COUNT = 0x420096 => "UsageLimitsCount",
    USAGE_LIMITS_TOTAL = 0x420097 => "UsageLimitsTotal",
    USAGE_LIMITS_UNIT = 0x420098 => "UsageLimitsUnit",
    USERNAME = 0x420099 => "Username",
    VALIDITY_DATE = 0x42009A => "ValidityDate",
    VALIDITY_INDICATOR = 0x42009B => "ValidityIndicator",
    VENDOR_EXTENSION = 0x42009C => "VendorExtension",
    VENDOR_IDENTIFICATION = 0x42009D => "VendorIdentification",
    WRAPPING_METHOD = 0x42009E => "WrappingMethod",
    X = 0x42009F => "X",
    Y = 0x4200A0 => "Y",
    PASSWORD = 0x4200A1 => "Password",
    // KMIP 1.1
    DEVICE_IDENTIFIER = 0x4200A2 => "DeviceIdentifier",
    ENCODING_OPTION = 0x4200A3 => "EncodingOption",
    EXTENSION_INFORMATION = 0x4200A4 => "ExtensionInformation",
    EXTENSION_NAME = 0x4200A5 => "ExtensionName",
    EXTENSION_TAG = 0x4200A6 => "ExtensionTag",
    EXTENSION_TYPE = 0x4200A7 => "ExtensionType",
    FRESH = 0x4200A8 => "Fresh",
    MACHINE_IDENTIFIER = 0x4200A9 => "MachineIdentifier",
    MEDIA_IDENTIFIER = 0x4200AA => "MediaIdentifier",
    NETWORK_IDENTIFIER = 0x4200AB => "NetworkIdentifier",
    OBJECT_GROUP_MEMBER = 0x4200AC => "ObjectGroupMember",
    CERTIFICATE_LENGTH = 0x4200AD => "CertificateLength",
    DIGITAL_SIGNATURE_ALGORITHM = 0x4200AE => "DigitalSignatureAlgorithm",
    CERTIFICATE_SERIAL_NUMBER = 0x4200AF => "CertificateSerialNumber",
    DEVICE_SERIAL_NUMBER = 0x4200B0 => "DeviceSerialNumber",
    ISSUER_ALTERNATIVE_NAME = 0x4200B1 => "IssuerAlternativeName",
    ISSUER_DISTINGUISHED_NAME = 0x4200B2 => "IssuerDistinguishedName",
    SUBJECT_ALTERNATIVE_NAME = 0x4200B3 => "SubjectAlternativeName",
    SUBJECT_DISTINGUISHED_NAME = 0x4200B4 => "SubjectDistinguishedName",
    X_509_CERTIFICATE_IDENTIFIER = 0x4200B5 => "X_509CertificateIdentifier",
    X_509_CERTIFICATE_ISSUER = 0x4200B6 => "X_509CertificateIssuer",
    X_509_CERTIFICATE_SUBJECT = 0x4200B7 => "X_509CertificateSubject",
    // KMIP 1.2
    KEY_VALUE_LOCATION = 0x4200B8 => "KeyValueLocation",
    KEY_VALUE_LOCATION_VALUE = 0x4200B9 => "KeyValueLocationValue",
    KEY_VALUE_LOCATION_TYPE = 0x4200BA => "KeyValueLocationType",
    KEY_VALUE_PRESENT = 0x4200BB => "KeyValuePresent",
    ORIGINAL_CREATION_DATE = 0x4200BC => "OriginalCreationDate",
    PGP_KEY = 0x4200BD => "PGPKey",
    PGP_KEY_VERSION = 0x4200BE => "PGPKeyVersion",
    ALTERNATIVE_NAME = 0x4200BF => "AlternativeName",
    ALTERNATIVE_NAME_VALUE = 0x4200C0 => "AlternativeNameValue",
    ALTERNATIVE_NAME_TYPE = 0x4200C1 => "AlternativeNameType",
    DATA = 0x4200C2 => "Data",
    SIGNATURE_DATA = 0x4200C3 => "SignatureData",
    DATA_LENGTH = 0x4200C4 => "DataLength",
    RANDOM_IV = 0x4200C5 => "RandomIV",
    MAC_DATA = 0x4200C6 => "MACData",
    ATTESTATION_TYPE = 0x4200C7 => "AttestationType",
    NONCE = 0x4200C8 => "Nonce",
    NONCE_ID = 0x4200C9 => "NonceID",
    NONCE_VALUE = 0x4200CA => "NonceValue",
    ATTESTATION_MEASUREMENT = 0x4200CB => "AttestationMeasurement",
    ATTESTATION_ASSERTION = 0x4200CC => "AttestationAssertion",
    IV_LENGTH = 0x4200CD => "IVLength",
    TAG_LENGTH = 0x4200CE => "TagLength",
    FIXED_FIELD_LENGTH = 0x4200CF => "FixedFieldLength",
    COUNTER_LENGTH = 0x4200D0 => "CounterLength",
    INITIAL_COUNTER_VALUE = 0x4200D1 => "InitialCounterValue",
    INVOCATION_FIELD_LENGTH = 0x4200D2 => "InvocationFieldLength",
    ATTESTATION_CAPABLE_INDICATOR = 0x4200D3 => "AttestationCapableIndicator",
    // KMIP 1.3
    OFFSET_ITEMS = 0x4200D4 => "OffsetItems",
    LOCATED_ITEMS = 0x4200D5 => "LocatedItems",
    CORRELATION_VALUE = 0x4200D6 => "CorrelationValue",
    INIT_INDICATOR = 0x4200D7 => "InitIndicator",
    FINAL_INDICATOR = 0x4200D8 => "FinalIndicator",
    RNG_PARAMETERS = 0x4200D9 => "RNGParameters",
    RNG_ALGORITHM = 0x4200DA => "RNGAlgorithm",
    DRBG_ALGORITHM = 0x4200DB => "DRBGAlgorithm",
    FIPS186_VARIATION = 0x4200DC => "FIPS186Variation",
    PREDICTION_RESISTANCE = 0x4200DD => "PredictionResistance",
    RANDOM_NUMBER_GENERATOR = 0x4200DE => "RandomNumberGenerator",
    VALIDATION_INFORMATION = 0x4200DF => "ValidationInformation",
    VALIDATION_AUTHORITY_TYPE = 0x4200E0 => "ValidationAuthorityType",
    VALIDATION_AUTHORITY_COUNTRY = 0x4200E1 => "ValidationAuthorityCountry",
    VALIDATION_AUTHORITY_URI = 0x4200E2 => "ValidationAuthorityURI",
    VALIDATION_VERSION_MAJOR = 0x4200E3 => "ValidationVersionMajor",
    VALIDATION_VERSION_MINOR = 0x4200E4 => "ValidationVersionMinor",
    VALIDATION_TYPE = 0x4200E5 => "ValidationType",
    VALIDATION_LEVEL = 0x4200E6 => "ValidationLevel",
    VALIDATION_CERTIFICATE_IDENTIFIER = 0x4200E7 => "ValidationCertificateIdentifier",
    VALIDATION_CERTIFICATE_URI = 0x4200E8 => "ValidationCertificateURI",
    VALIDATION_VENDOR_URI = 0x4200E9 => "ValidationVendorURI",
    VALIDATION_PROFILE = 0x4200EA => "ValidationProfile",
    PROFILE_INFORMATION = 0x4200EB => "ProfileInformation",
    PROFILE_NAME = 0x4200EC => "ProfileName",
    SERVER_URI = 0x4200ED => "ServerURI",
    SERVER_PORT = 0x4200EE => "ServerPort",
    STREAMING_CAPABILITY = 0x4200EF => "StreamingCapability",
    ASYNCHRONOUS_CAPABILITY = 0x4200F0 => "AsynchronousCapability",
    ATTESTATION_CAPABILITY = 0x4200F1 => "AttestationCapability",
    UNWRAP_MODE = 0x4200F2 => "UnwrapMode",
    DESTROY_ACTION = 0x4200F3 => "DestroyAction",
    SHREDDING_ALGORITHM = 0x4200F4 => "ShreddingAlgorithm",
    RNG_MODE = 0x4200F5 => "RNGMode",
    CLIENT_REGISTRATION_METHOD = 0x4200F6 => "ClientRegistrationMethod",
    CAPABILITY_INFORMATION = 0x4200F7 => "CapabilityInformation",
    // KMIP 1.4
    KEY_WRAP_TYPE = 0x4200F8 => "KeyWrapType",
    BATCH_UNDO_CAPABILITY = 0x4200F9 => "BatchUndoCapability",
    BATCH_CONTINUE_CAPABILITY = 0x4200FA => "BatchContinueCapability",
    PKCS12_FRIENDLY_NAME = 0x4200FB => "PKCS_12FriendlyName",
    DESCRIPTION = 0x4200FC => "Description",
    COMMENT = 0x4200FD => "Comment",
    AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA = 0x4200FE => "AuthenticatedEncryptionAdditionalData",
    AUTHENTICATED_ENCRYPTION_TAG = 0x4200FF => "AuthenticatedEncryptionTag",
    SALT_LENGTH = 0x420100 => "SaltLength",
    MASK_GENERATOR = 0x420101 => "MaskGenerator",
    MASK_GENERATOR_HASHING_ALGORITHM = 0x420102 => "MaskGeneratorHashingAlgorithm",
    P_SOURCE = 0x420103 => "PSource",
    TRAILER_FIELD = 0x420104 => "TrailerField",
    CLIENT_CORRELATION_VALUE = 0x420105 => "ClientCorrelationValue",
    SERVER_CORRELATION_VALUE = 0x420106 => "ServerCorrelationValue",
    DIGESTED_DATA = 0x420107 => "DigestedData",
    CERTIFICATE_SUBJECT_CN = 0x420108 => "CertificateSubjectCN",
    CERTIFICATE_SUBJECT_O = 0x420109 => "CertificateSubjectO",
    CERTIFICATE_SUBJECT_OU = 0x42010A => "CertificateSubjectOU",
    CERTIFICATE_SUBJECT_EMAIL = 0x42010B => "CertificateSubjectEmail",
    CERTIFICATE_SUBJECT_C = 0x42010C => "CertificateSubjectC",
    CERTIFICATE_SUBJECT_ST = 0x42010D => "CertificateSubjectST",
    CERTIFICATE_SUBJECT_L = 0x42010E => "CertificateSubjectL",
    CERTIFICATE_SUBJECT_UID = 0x42010F => "CertificateSubjectUID",
    CERTIFICATE_SUBJECT_SERIAL_NUMBER = 0x420110 => "CertificateSubjectSerialNumber",
    CERTIFICATE_SUBJECT_TITLE = 0x420111 => "CertificateSubjectTitle",
    CERTIFICATE_SUBJECT_DC = 0x420112 => "CertificateSubjectDC",
    CERTIFICATE_SUBJECT_DN_QUALIFIER = 0x420113 => "CertificateSubjectDNQualifier",
    CERTIFICATE_ISSUER_CN = 0x420114 => "CertificateIssuerCN",
    CERTIFICATE_ISSUER_O = 0x420115 => "CertificateIssuerO",
    CERTIFICATE_ISSUER_OU = 0x420116 => "CertificateIssuerOU",
    CERTIFICATE_ISSUER_EMAIL = 0x420117 => "CertificateIssuerEmail",
    CERTIFICATE_ISSUER_C = 0x420118 => "CertificateIssuerC",
    CERTIFICATE_ISSUER_ST = 0x420119 => "CertificateIssuerST",
    CERTIFICATE_ISSUER_L = 0x42011A => "CertificateIssuerL",
    CERTIFICATE_ISSUER_UID = 0x42011B => "CertificateIssuerUID",
    CERTIFICATE_ISSUER_SERIAL_NUMBER = 0x42011C => "CertificateIssuerSerialNumber",
    CERTIFICATE_ISSUER_TITLE = 0x42011D => "CertificateIssuerTitle",
    CERTIFICATE_ISSUER_DC = 0x42011E => "CertificateIssuerDC",
    CERTIFICATE_ISSUER_DN_QUALIFIER = 0x42011F => "CertificateIssuerDNQualifier",
    SENSITIVE = 0x420120 => "Sensitive",
    ALWAYS_SENSITIVE = 0x420121 => "AlwaysSensitive",
    EXTRACTABLE = 0x420122 => "Extractable",
    NEVER_EXTRACTABLE = 0x420123 => "NeverExtractable",
    REPLACE_EXISTING = 0x420124 => "ReplaceExisting",
    // KMIP 2.0
    ATTRIBUTES = 0x420125 => "Attributes",
    COMMON_ATTRIBUTES = 0x420126 => "CommonAttributes",
    PRIVATE_KEY_ATTRIBUTES = 0x420127 => "PrivateKeyAttributes",
    PUBLIC_KEY_ATTRIBUTES = 0x420128 => "PublicKeyAttributes",
    EXTENSION_ENUMERATION = 0x420129 => "ExtensionEnumeration",
    EXTENSION_ATTRIBUTE = 0x42012A => "ExtensionAttribute",
    EXTENSION_PARENT_STRUCTURE_TAG = 0x42012B => "ExtensionParentStructureTag",
    EXTENSION_DESCRIPTION = 0x42012C => "ExtensionDescription",
    SERVER_NAME = 0x42012D => "ServerName",
    SERVER_SERIAL_NUMBER = 0x42012E => "ServerSerialNumber",
    SERVER_VERSION = 0x42012F => "ServerVersion",
    SERVER_LOAD = 0x420130 => "ServerLoad",
    PRODUCT_NAME = 0x420131 => "ProductName",
    BUILD_LEVEL = 0x420132 => "BuildLevel",
    BUILD_DATE = 0x420133 => "BuildDate",
    CLUSTER_INFO = 0x420134 => "ClusterInfo",
    ALTERNATE_FAILOVER_ENDPOINTS = 0x420135 => "AlternateFailoverEndpoints",
    SHORT_UNIQUE_IDENTIFIER = 0x420136 => "ShortUniqueIdentifier",
    TAG = 0x420138 => "Tag",
    CERTIFICATE_REQUEST_UNIQUE_IDENTIFIER = 0x420139 => "CertificateRequestUniqueIdentifier",
    NIST_KEY_TYPE = 0x42013A => "NISTKeyType",
    ATTRIBUTE_REFERENCE = 0x42013B => "AttributeReference",
    CURRENT_ATTRIBUTE = 0x42013C => "CurrentAttribute",
    NEW_ATTRIBUTE = 0x42013D => "NewAttribute",
    CERTIFICATE_REQUEST_VALUE = 0x420140 => "CertificateRequestValue",
    LOG_MESSAGE = 0x420141 => "LogMessage",
    PROFILE_VERSION = 0x420142 => "ProfileVersion",
    PROFILE_VERSION_MAJOR = 0x420143 => "ProfileVersionMajor",
    PROFILE_VERSION_MINOR = 0x420144 => "ProfileVersionMinor",
    PROTECTION_LEVEL = 0x420145 => "ProtectionLevel",
    PROTECTION_PERIOD = 0x420146 => "ProtectionPeriod",
    QUANTUM_SAFE = 0x420147 => "QuantumSafe",
    QUANTUM_SAFE_CAPABILITY = 0x420148 => "QuantumSafeCapability",
    TICKET = 0x420149 => "Ticket",
    TICKET_TYPE = 0x42014A => "TicketType",
    TICKET_VALUE = 0x42014B => "TicketValue",
    REQUEST_COUNT = 0x42014C => "RequestCount",
    RIGHTS = 0x42014D => "Rights",
    OBJECTS = 0x42014E => "Objects",
    OPERATIONS = 0x42014F => "Operations",
    RIGHT = 0x420150 => "Right",
    ENDPOINT_ROLE = 0x420151 => "EndpointRole",
    DEFAULTS_INFORMATION = 0x420152 => "DefaultsInformation",
    OBJECT_DEFAULTS = 0x420153 => "ObjectDefaults",
    EPHEMERAL = 0x420154 => "Ephemeral",
    SERVER_HASHED_PASSWORD = 0x420155 => "ServerHashedPassword",
    ONE_TIME_PASSWORD = 0x420156 => "OneTimePassword",
    HASHED_PASSWORD = 0x420157 => "HashedPassword",
    ADJUSTMENT_TYPE = 0x420158 => "AdjustmentType",
    PKCS11_INTERFACE = 0x420159 => "PKCS_11Interface",
    PKCS11_FUNCTION = 0x42015A => "PKCS_11Function",
    PKCS11_INPUT_PARAMETERS = 0x42015B => "PKCS_11InputParameters",
    PKCS11_OUTPUT_PARAMETERS = 0x42015C => "PKCS_11OutputParameters",
    PKCS11_RETURN_CODE = 0x42015D => "PKCS_11ReturnCode",
    PROTECTION_STORAGE_MASK = 0x42015E => "ProtectionStorageMask",
    PROTECTION_STORAGE_MASKS = 0x42015F => "ProtectionStorageMasks",
    INTEROP_FUNCTION = 0x420160 => "InteropFunction",
    INTEROP_IDENTIFIER = 0x420161 => "InteropIdentifier",
    ADJUSTMENT_VALUE = 0x420162 => "AdjustmentValue",
    COMMON_PROTECTION_STORAGE_MASKS = 0x420163 => "CommonProtectionStorageMasks",
    PRIVATE_PROTECTION_STORAGE_MASKS = 0x420164 => "PrivateProtectionStorageMasks",
    PUBLIC_PROTECTION_STORAGE_MASKS = 0x420165 => "PublicProtectionStorageMasks",
}

/// The spec name of `tag` (e.g. `"RequestMessage"`), if it is a known tag.
pub fn tag_name(tag: Tag) -> Option<&'static str> {
    TAGS.binary_search_by_key(&tag, |(t, _)| *t)
        .ok()
        .map(|i| TAGS[i].1)
}

/// The tag called `name` (exact, case-sensitive spec name such as
/// `"UniqueIdentifier"`).
pub fn tag_by_name(name: &str) -> Option<Tag> {
    TAGS.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
}

/// Every known tag and its name, sorted by tag.
pub fn all_tags() -> &'static [(Tag, &'static str)] {
    TAGS
}

/// One module per enumeration: a `u32` constant per value and `NAMES`, the
/// `(value, name)` table.
macro_rules! enumeration {
    ($(#[$meta:meta])* $module:ident { $($name:ident = $value:literal => $text:literal,)* }) => {
        $(#[$meta])*
        pub mod $module {
            $(pub const $name: u32 = $value;)*
            /// Every value and its name.
            pub const NAMES: &[(u32, &str)] = &[$(($value, $text),)*];
        }
    };
}

/// Bit masks (Integer-typed in TTLV) are written the same way.
macro_rules! mask {
    ($($t:tt)*) => {
        enumeration! { $($t)* }
    };
}

enumeration! {
    /// Values of `OPERATION`.
    operation {
        CREATE = 0x00000001 => "Create",
        CREATE_KEY_PAIR = 0x00000002 => "CreateKeyPair",
        REGISTER = 0x00000003 => "Register",
        REKEY = 0x00000004 => "ReKey",
        DERIVE_KEY = 0x00000005 => "DeriveKey",
        CERTIFY = 0x00000006 => "Certify",
        RECERTIFY = 0x00000007 => "ReCertify",
        LOCATE = 0x00000008 => "Locate",
        CHECK = 0x00000009 => "Check",
        GET = 0x0000000A => "Get",
        GET_ATTRIBUTES = 0x0000000B => "GetAttributes",
        GET_ATTRIBUTE_LIST = 0x0000000C => "GetAttributeList",
        ADD_ATTRIBUTE = 0x0000000D => "AddAttribute",
        MODIFY_ATTRIBUTE = 0x0000000E => "ModifyAttribute",
        DELETE_ATTRIBUTE = 0x0000000F => "DeleteAttribute",
        OBTAIN_LEASE = 0x00000010 => "ObtainLease",
        GET_USAGE_ALLOCATION = 0x00000011 => "GetUsageAllocation",
        ACTIVATE = 0x00000012 => "Activate",
        REVOKE = 0x00000013 => "Revoke",
        DESTROY = 0x00000014 => "Destroy",
        ARCHIVE = 0x00000015 => "Archive",
        RECOVER = 0x00000016 => "Recover",
        VALIDATE = 0x00000017 => "Validate",
        QUERY = 0x00000018 => "Query",
        CANCEL = 0x00000019 => "Cancel",
        POLL = 0x0000001A => "Poll",
        NOTIFY = 0x0000001B => "Notify",
        PUT = 0x0000001C => "Put",
        REKEY_KEY_PAIR = 0x0000001D => "ReKeyKeyPair",
        DISCOVER_VERSIONS = 0x0000001E => "DiscoverVersions",
        ENCRYPT = 0x0000001F => "Encrypt",
        DECRYPT = 0x00000020 => "Decrypt",
        SIGN = 0x00000021 => "Sign",
        SIGNATURE_VERIFY = 0x00000022 => "SignatureVerify",
        MAC = 0x00000023 => "MAC",
        MAC_VERIFY = 0x00000024 => "MACVerify",
        RNG_RETRIEVE = 0x00000025 => "RNGRetrieve",
        RNG_SEED = 0x00000026 => "RNGSeed",
        HASH = 0x00000027 => "Hash",
        CREATE_SPLIT_KEY = 0x00000028 => "CreateSplitKey",
        JOIN_SPLIT_KEY = 0x00000029 => "JoinSplitKey",
        IMPORT = 0x0000002A => "Import",
        EXPORT = 0x0000002B => "Export",
        LOG = 0x0000002C => "Log",
        LOGIN = 0x0000002D => "Login",
        LOGOUT = 0x0000002E => "Logout",
        DELEGATED_LOGIN = 0x0000002F => "DelegatedLogin",
        ADJUST_ATTRIBUTE = 0x00000030 => "AdjustAttribute",
        SET_ATTRIBUTE = 0x00000031 => "SetAttribute",
        SET_ENDPOINT_ROLE = 0x00000032 => "SetEndpointRole",
        PKCS_11 = 0x00000033 => "PKCS_11",
        INTEROP = 0x00000034 => "Interop",
        REPROVISION = 0x00000035 => "ReProvision",
    }
}

enumeration! {
    /// Values of `OBJECT_TYPE`.
    object_type {
        CERTIFICATE = 0x00000001 => "Certificate",
        SYMMETRIC_KEY = 0x00000002 => "SymmetricKey",
        PUBLIC_KEY = 0x00000003 => "PublicKey",
        PRIVATE_KEY = 0x00000004 => "PrivateKey",
        SPLIT_KEY = 0x00000005 => "SplitKey",
        TEMPLATE = 0x00000006 => "Template",
        SECRET_DATA = 0x00000007 => "SecretData",
        OPAQUE_OBJECT = 0x00000008 => "OpaqueObject",
        PGP_KEY = 0x00000009 => "PGPKey",
        CERTIFICATE_REQUEST = 0x0000000A => "CertificateRequest",
    }
}

enumeration! {
    /// Values of `CRYPTOGRAPHIC_ALGORITHM`.
    cryptographic_algorithm {
        DES = 0x00000001 => "DES",
        TRIPLE_DES = 0x00000002 => "DES3",
        AES = 0x00000003 => "AES",
        RSA = 0x00000004 => "RSA",
        DSA = 0x00000005 => "DSA",
        ECDSA = 0x00000006 => "ECDSA",
        HMAC_SHA1 = 0x00000007 => "HMAC_SHA1",
        HMAC_SHA224 = 0x00000008 => "HMAC_SHA224",
        HMAC_SHA256 = 0x00000009 => "HMAC_SHA256",
        HMAC_SHA384 = 0x0000000A => "HMAC_SHA384",
        HMAC_SHA512 = 0x0000000B => "HMAC_SHA512",
        HMAC_MD5 = 0x0000000C => "HMAC_MD5",
        DH = 0x0000000D => "DH",
        ECDH = 0x0000000E => "ECDH",
        ECMQV = 0x0000000F => "ECMQV",
        BLOWFISH = 0x00000010 => "Blowfish",
        CAMELLIA = 0x00000011 => "Camellia",
        CAST5 = 0x00000012 => "CAST5",
        IDEA = 0x00000013 => "IDEA",
        MARS = 0x00000014 => "MARS",
        RC2 = 0x00000015 => "RC2",
        RC4 = 0x00000016 => "RC4",
        RC5 = 0x00000017 => "RC5",
        SKIPJACK = 0x00000018 => "SKIPJACK",
        TWOFISH = 0x00000019 => "Twofish",
        EC = 0x0000001A => "EC",
        ONE_TIME_PAD = 0x0000001B => "OneTimePad",
        CHACHA20 = 0x0000001C => "ChaCha20",
        POLY1305 = 0x0000001D => "Poly1305",
        CHACHA20_POLY1305 = 0x0000001E => "ChaCha20Poly1305",
        SHA3_224 = 0x0000001F => "SHA3_224",
        SHA3_256 = 0x00000020 => "SHA3_256",
        SHA3_384 = 0x00000021 => "SHA3_384",
        SHA3_512 = 0x00000022 => "SHA3_512",
        HMAC_SHA3_224 = 0x00000023 => "HMAC_SHA3_224",
        HMAC_SHA3_256 = 0x00000024 => "HMAC_SHA3_256",
        HMAC_SHA3_384 = 0x00000025 => "HMAC_SHA3_384",
        HMAC_SHA3_512 = 0x00000026 => "HMAC_SHA3_512",
        SHAKE_128 = 0x00000027 => "SHAKE_128",
        SHAKE_256 = 0x00000028 => "SHAKE_256",
        ARIA = 0x00000029 => "ARIA",
        SEED = 0x0000002A => "SEED",
        SM2 = 0x0000002B => "SM2",
        SM3 = 0x0000002C => "SM3",
        SM4 = 0x0000002D => "SM4",
        GOST_R_34_10_2012 = 0x0000002E => "GOSTR34_10_2012",
        GOST_R_34_11_2012 = 0x0000002F => "GOSTR34_11_2012",
        GOST_R_34_13_2015 = 0x00000030 => "GOSTR34_13_2015",
        GOST_28147_89 = 0x00000031 => "GOST28147_89",
        XMSS = 0x00000032 => "XMSS",
        SPHINCS_256 = 0x00000033 => "SPHINCS_256",
        MCELIECE = 0x00000034 => "McEliece",
        MCELIECE_6960119 = 0x00000035 => "McEliece_6960119",
        MCELIECE_8192128 = 0x00000036 => "McEliece_8192128",
        ED25519 = 0x00000037 => "Ed25519",
        ED448 = 0x00000038 => "Ed448",
    }
}

enumeration! {
    /// Values of `RESULT_STATUS`.
    result_status {
        SUCCESS = 0x00000000 => "Success",
        OPERATION_FAILED = 0x00000001 => "OperationFailed",
        OPERATION_PENDING = 0x00000002 => "OperationPending",
        OPERATION_UNDONE = 0x00000003 => "OperationUndone",
    }
}

enumeration! {
    /// Values of `RESULT_REASON`.
    result_reason {
        ITEM_NOT_FOUND = 0x00000001 => "ItemNotFound",
        RESPONSE_TOO_LARGE = 0x00000002 => "ResponseTooLarge",
        AUTHENTICATION_NOT_SUCCESSFUL = 0x00000003 => "AuthenticationNotSuccessful",
        INVALID_MESSAGE = 0x00000004 => "InvalidMessage",
        OPERATION_NOT_SUPPORTED = 0x00000005 => "OperationNotSupported",
        MISSING_DATA = 0x00000006 => "MissingData",
        INVALID_FIELD = 0x00000007 => "InvalidField",
        FEATURE_NOT_SUPPORTED = 0x00000008 => "FeatureNotSupported",
        OPERATION_CANCELED_BY_REQUESTER = 0x00000009 => "OperationCanceledByRequester",
        CRYPTOGRAPHIC_FAILURE = 0x0000000A => "CryptographicFailure",
        ILLEGAL_OPERATION = 0x0000000B => "IllegalOperation",
        PERMISSION_DENIED = 0x0000000C => "PermissionDenied",
        OBJECT_ARCHIVED = 0x0000000D => "ObjectArchived",
        INDEX_OUT_OF_BOUNDS = 0x0000000E => "IndexOutOfBounds",
        APPLICATION_NAMESPACE_NOT_SUPPORTED = 0x0000000F => "ApplicationNamespaceNotSupported",
        KEY_FORMAT_TYPE_NOT_SUPPORTED = 0x00000010 => "KeyFormatTypeNotSupported",
        KEY_COMPRESSION_TYPE_NOT_SUPPORTED = 0x00000011 => "KeyCompressionTypeNotSupported",
        ENCODING_OPTION_ERROR = 0x00000012 => "EncodingOptionError",
        KEY_VALUE_NOT_PRESENT = 0x00000013 => "KeyValueNotPresent",
        ATTESTATION_REQUIRED = 0x00000014 => "AttestationRequired",
        ATTESTATION_FAILED = 0x00000015 => "AttestationFailed",
        SENSITIVE = 0x00000016 => "Sensitive",
        NOT_EXTRACTABLE = 0x00000017 => "NotExtractable",
        OBJECT_ALREADY_EXISTS = 0x00000018 => "ObjectAlreadyExists",
        INVALID_TICKET = 0x00000019 => "InvalidTicket",
        USAGE_LIMIT_EXCEEDED = 0x0000001A => "UsageLimitExceeded",
        NUMERIC_RANGE = 0x0000001B => "NumericRange",
        INVALID_DATA_TYPE = 0x0000001C => "InvalidDataType",
        READ_ONLY_ATTRIBUTE = 0x0000001D => "ReadOnlyAttribute",
        MULTI_VALUED_ATTRIBUTE = 0x0000001E => "MultiValuedAttribute",
        UNSUPPORTED_ATTRIBUTE = 0x0000001F => "UnsupportedAttribute",
        ATTRIBUTE_INSTANCE_NOT_FOUND = 0x00000020 => "AttributeInstanceNotFound",
        ATTRIBUTE_NOT_FOUND = 0x00000021 => "AttributeNotFound",
        ATTRIBUTE_READ_ONLY = 0x00000022 => "AttributeReadOnly",
        ATTRIBUTE_SINGLE_VALUED = 0x00000023 => "AttributeSingleValued",
        BAD_CRYPTOGRAPHIC_PARAMETERS = 0x00000024 => "BadCryptographicParameters",
        BAD_PASSWORD = 0x00000025 => "BadPassword",
        CODEC_ERROR = 0x00000026 => "CodecError",
        ILLEGAL_OBJECT_TYPE = 0x00000028 => "IllegalObjectType",
        INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK = 0x00000029 => "IncompatibleCryptographicUsageMask",
        INTERNAL_SERVER_ERROR = 0x0000002A => "InternalServerError",
        INVALID_ASYNCHRONOUS_CORRELATION_VALUE = 0x0000002B => "InvalidAsynchronousCorrelationValue",
        INVALID_ATTRIBUTE = 0x0000002C => "InvalidAttribute",
        INVALID_ATTRIBUTE_VALUE = 0x0000002D => "InvalidAttributeValue",
        INVALID_CORRELATION_VALUE = 0x0000002E => "InvalidCorrelationValue",
        INVALID_CSR = 0x0000002F => "InvalidCSR",
        INVALID_OBJECT_TYPE = 0x00000030 => "InvalidObjectType",
        KEY_WRAP_TYPE_NOT_SUPPORTED = 0x00000032 => "KeyWrapTypeNotSupported",
        MISSING_INITIALIZATION_VECTOR = 0x00000034 => "MissingInitializationVector",
        NON_UNIQUE_NAME_ATTRIBUTE = 0x00000035 => "NonUniqueNameAttribute",
        OBJECT_DESTROYED = 0x00000036 => "ObjectDestroyed",
        OBJECT_NOT_FOUND = 0x00000037 => "ObjectNotFound",
        NOT_AUTHORISED = 0x00000039 => "NotAuthorised",
        SERVER_LIMIT_EXCEEDED = 0x0000003A => "ServerLimitExceeded",
        UNKNOWN_ENUMERATION = 0x0000003B => "UnknownEnumeration",
        UNKNOWN_MESSAGE_EXTENSION = 0x0000003C => "UnknownMessageExtension",
        UNKNOWN_TAG = 0x0000003D => "UnknownTag",
        UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS = 0x0000003E => "UnsupportedCryptographicParameters",
        UNSUPPORTED_PROTOCOL_VERSION = 0x0000003F => "UnsupportedProtocolVersion",
        WRAPPING_OBJECT_ARCHIVED = 0x00000040 => "WrappingObjectArchived",
        WRAPPING_OBJECT_DESTROYED = 0x00000041 => "WrappingObjectDestroyed",
        WRAPPING_OBJECT_NOT_FOUND = 0x00000042 => "WrappingObjectNotFound",
        WRONG_KEY_LIFECYCLE_STATE = 0x00000043 => "WrongKeyLifecycleState",
        PROTECTION_STORAGE_UNAVAILABLE = 0x00000044 => "ProtectionStorageUnavailable",
        PKCS11_CODEC_ERROR = 0x00000045 => "PKCS_11CodecError",
        PKCS11_INVALID_FUNCTION = 0x00000046 => "PKCS_11InvalidFunction",
        PKCS11_INVALID_INTERFACE = 0x00000047 => "PKCS_11InvalidInterface",
        GENERAL_FAILURE = 0x00000100 => "GeneralFailure",
    }
}

enumeration! {
    /// Values of `BLOCK_CIPHER_MODE`.
    block_cipher_mode {
        CBC = 0x00000001 => "CBC",
        ECB = 0x00000002 => "ECB",
        PCBC = 0x00000003 => "PCBC",
        CFB = 0x00000004 => "CFB",
        OFB = 0x00000005 => "OFB",
        CTR = 0x00000006 => "CTR",
        CMAC = 0x00000007 => "CMAC",
        CCM = 0x00000008 => "CCM",
        GCM = 0x00000009 => "GCM",
        CBC_MAC = 0x0000000A => "CBC_MAC",
        XTS = 0x0000000B => "XTS",
        AES_KEY_WRAP_PADDING = 0x0000000C => "AESKeyWrapPadding",
        NIST_KEY_WRAP = 0x0000000D => "NISTKeyWrap",
        X9_102_AESKW = 0x0000000E => "X9_102AESKW",
        X9_102_TDKW = 0x0000000F => "X9_102TDKW",
        X9_102_AKW1 = 0x00000010 => "X9_102AKW1",
        X9_102_AKW2 = 0x00000011 => "X9_102AKW2",
        AEAD = 0x00000012 => "AEAD",
    }
}

enumeration! {
    /// Values of `PADDING_METHOD`.
    padding_method {
        NONE = 0x00000001 => "None",
        OAEP = 0x00000002 => "OAEP",
        PKCS5 = 0x00000003 => "PKCS5",
        SSL3 = 0x00000004 => "SSL3",
        ZEROS = 0x00000005 => "Zeros",
        ANSI_X923 = 0x00000006 => "ANSIX9_23",
        ISO_10126 = 0x00000007 => "ISO10126",
        PKCS1V15 = 0x00000008 => "PKCS1V1_5",
        X931 = 0x00000009 => "X9_31",
        PSS = 0x0000000A => "PSS",
    }
}

enumeration! {
    /// Values of `HASHING_ALGORITHM`, `MASK_GENERATOR_HASHING_ALGORITHM`.
    hashing_algorithm {
        MD2 = 0x00000001 => "MD2",
        MD4 = 0x00000002 => "MD4",
        MD5 = 0x00000003 => "MD5",
        SHA_1 = 0x00000004 => "SHA_1",
        SHA_224 = 0x00000005 => "SHA_224",
        SHA_256 = 0x00000006 => "SHA_256",
        SHA_384 = 0x00000007 => "SHA_384",
        SHA_512 = 0x00000008 => "SHA_512",
        RIPEMD_160 = 0x00000009 => "RIPEMD_160",
        TIGER = 0x0000000A => "Tiger",
        WHIRLPOOL = 0x0000000B => "Whirlpool",
        SHA_512_224 = 0x0000000C => "SHA_512_224",
        SHA_512_256 = 0x0000000D => "SHA_512_256",
        SHA3_224 = 0x0000000E => "SHA3_224",
        SHA3_256 = 0x0000000F => "SHA3_256",
        SHA3_384 = 0x00000010 => "SHA3_384",
        SHA3_512 = 0x00000011 => "SHA3_512",
    }
}

enumeration! {
    /// Values of `KEY_FORMAT_TYPE`.
    key_format_type {
        RAW = 0x00000001 => "Raw",
        OPAQUE = 0x00000002 => "Opaque",
        PKCS_1 = 0x00000003 => "PKCS_1",
        PKCS_8 = 0x00000004 => "PKCS_8",
        X_509 = 0x00000005 => "X_509",
        EC_PRIVATE_KEY = 0x00000006 => "ECPrivateKey",
        TRANSPARENT_SYMMETRIC_KEY = 0x00000007 => "TransparentSymmetricKey",
        TRANSPARENT_DSA_PRIVATE_KEY = 0x00000008 => "TransparentDSAPrivateKey",
        TRANSPARENT_DSA_PUBLIC_KEY = 0x00000009 => "TransparentDSAPublicKey",
        TRANSPARENT_RSA_PRIVATE_KEY = 0x0000000A => "TransparentRSAPrivateKey",
        TRANSPARENT_RSA_PUBLIC_KEY = 0x0000000B => "TransparentRSAPublicKey",
        TRANSPARENT_DH_PRIVATE_KEY = 0x0000000C => "TransparentDHPrivateKey",
        TRANSPARENT_DH_PUBLIC_KEY = 0x0000000D => "TransparentDHPublicKey",
        TRANSPARENT_ECDSA_PRIVATE_KEY = 0x0000000E => "TransparentECDSAPrivateKey",
        TRANSPARENT_ECDSA_PUBLIC_KEY = 0x0000000F => "TransparentECDSAPublicKey",
        TRANSPARENT_ECDH_PRIVATE_KEY = 0x00000010 => "TransparentECDHPrivateKey",
        TRANSPARENT_ECDH_PUBLIC_KEY = 0x00000011 => "TransparentECDHPublicKey",
        TRANSPARENT_ECMQV_PRIVATE_KEY = 0x00000012 => "TransparentECMQVPrivateKey",
        TRANSPARENT_ECMQV_PUBLIC_KEY = 0x00000013 => "TransparentECMQVPublicKey",
        TRANSPARENT_EC_PRIVATE_KEY = 0x00000014 => "TransparentECPrivateKey",
        TRANSPARENT_EC_PUBLIC_KEY = 0x00000015 => "TransparentECPublicKey",
        PKCS_12 = 0x00000016 => "PKCS_12",
        PKCS_10 = 0x00000017 => "PKCS_10",
    }
}

enumeration! {
    /// Values of `STATE`.
    state {
        PRE_ACTIVE = 0x00000001 => "PreActive",
        ACTIVE = 0x00000002 => "Active",
        DEACTIVATED = 0x00000003 => "Deactivated",
        COMPROMISED = 0x00000004 => "Compromised",
        DESTROYED = 0x00000005 => "Destroyed",
        DESTROYED_COMPROMISED = 0x00000006 => "DestroyedCompromised",
    }
}

enumeration! {
    /// Values of `REVOCATION_REASON_CODE`.
    revocation_reason_code {
        UNSPECIFIED = 0x00000001 => "Unspecified",
        KEY_COMPROMISE = 0x00000002 => "KeyCompromise",
        CA_COMPROMISE = 0x00000003 => "CACompromise",
        AFFILIATION_CHANGED = 0x00000004 => "AffiliationChanged",
        SUPERSEDED = 0x00000005 => "Superseded",
        CESSATION_OF_OPERATION = 0x00000006 => "CessationOfOperation",
        PRIVILEGE_WITHDRAWN = 0x00000007 => "PrivilegeWithdrawn",
    }
}

enumeration! {
    /// Values of `NAME_TYPE`.
    name_type {
        UNINTERPRETED_TEXT_STRING = 0x00000001 => "UninterpretedTextString",
        URI = 0x00000002 => "URI",
    }
}

enumeration! {
    /// Values of `QUERY_FUNCTION`.
    query_function {
        QUERY_OPERATIONS = 0x00000001 => "QueryOperations",
        QUERY_OBJECTS = 0x00000002 => "QueryObjects",
        QUERY_SERVER_INFORMATION = 0x00000003 => "QueryServerInformation",
        QUERY_APPLICATION_NAMESPACES = 0x00000004 => "QueryApplicationNamespaces",
        QUERY_EXTENSION_LIST = 0x00000005 => "QueryExtensionList",
        QUERY_EXTENSION_MAP = 0x00000006 => "QueryExtensionMap",
        QUERY_ATTESTATION_TYPES = 0x00000007 => "QueryAttestationTypes",
        QUERY_RNGS = 0x00000008 => "QueryRNGs",
        QUERY_VALIDATIONS = 0x00000009 => "QueryValidations",
        QUERY_PROFILES = 0x0000000A => "QueryProfiles",
        QUERY_CAPABILITIES = 0x0000000B => "QueryCapabilities",
        QUERY_CLIENT_REGISTRATION_METHODS = 0x0000000C => "QueryClientRegistrationMethods",
        QUERY_DEFAULTS_INFORMATION = 0x0000000D => "QueryDefaultsInformation",
        QUERY_STORAGE_PROTECTION_MASKS = 0x0000000E => "QueryStorageProtectionMasks",
    }
}

enumeration! {
    /// Values of `KEY_ROLE_TYPE`.
    key_role_type {
        BDK = 0x00000001 => "BDK",
        CVK = 0x00000002 => "CVK",
        DEK = 0x00000003 => "DEK",
        MKAC = 0x00000004 => "MKAC",
        MKSMC = 0x00000005 => "MKSMC",
        MKSMI = 0x00000006 => "MKSMI",
        MKDAC = 0x00000007 => "MKDAC",
        MKDN = 0x00000008 => "MKDN",
        MKCP = 0x00000009 => "MKCP",
        MKOTH = 0x0000000A => "MKOTH",
        KEK = 0x0000000B => "KEK",
        MAC_16609 = 0x0000000C => "MAC16609",
        MAC_97971 = 0x0000000D => "MAC97971",
        MAC_97972 = 0x0000000E => "MAC97972",
        MAC_97973 = 0x0000000F => "MAC97973",
        MAC_97974 = 0x00000010 => "MAC97974",
        MAC_97975 = 0x00000011 => "MAC97975",
        ZPK = 0x00000012 => "ZPK",
        PVKIBM = 0x00000013 => "PVKIBM",
        PVKPVV = 0x00000014 => "PVKPVV",
        PVKOTH = 0x00000015 => "PVKOTH",
        DUKPT = 0x00000016 => "DUKPT",
        IV = 0x00000017 => "IV",
        TRKBK = 0x00000018 => "TRKBK",
    }
}

enumeration! {
    /// Values of `WRAPPING_METHOD`.
    wrapping_method {
        ENCRYPT = 0x00000001 => "Encrypt",
        MAC_SIGN = 0x00000002 => "MACSign",
        ENCRYPT_THEN_MAC_SIGN = 0x00000003 => "EncryptThenMACSign",
        MAC_SIGN_THEN_ENCRYPT = 0x00000004 => "MACSignThenEncrypt",
        TR_31 = 0x00000005 => "TR_31",
    }
}

enumeration! {
    /// Values of `ENCODING_OPTION`.
    encoding_option {
        NO_ENCODING = 0x00000001 => "NoEncoding",
        TTLV_ENCODING = 0x00000002 => "TTLVEncoding",
    }
}

enumeration! {
    /// Values of `CREDENTIAL_TYPE`.
    credential_type {
        USERNAME_AND_PASSWORD = 0x00000001 => "UsernameAndPassword",
        DEVICE = 0x00000002 => "Device",
        ATTESTATION = 0x00000003 => "Attestation",
        ONE_TIME_PASSWORD = 0x00000004 => "OneTimePassword",
        HASHED_PASSWORD = 0x00000005 => "HashedPassword",
        TICKET = 0x00000006 => "Ticket",
    }
}

enumeration! {
    /// Values of `BATCH_ERROR_CONTINUATION_OPTION`.
    batch_error_continuation_option {
        CONTINUE = 0x00000001 => "Continue",
        STOP = 0x00000002 => "Stop",
        UNDO = 0x00000003 => "Undo",
    }
}

enumeration! {
    /// Values of `SECRET_DATA_TYPE`.
    secret_data_type {
        PASSWORD = 0x00000001 => "Password",
        SEED = 0x00000002 => "Seed",
    }
}

enumeration! {
    /// Values of `LINK_TYPE`.
    link_type {
        CERTIFICATE_LINK = 0x00000101 => "CertificateLink",
        PUBLIC_KEY_LINK = 0x00000102 => "PublicKeyLink",
        PRIVATE_KEY_LINK = 0x00000103 => "PrivateKeyLink",
        DERIVATION_BASE_OBJECT_LINK = 0x00000104 => "DerivationBaseObjectLink",
        DERIVED_KEY_LINK = 0x00000105 => "DerivedKeyLink",
        REPLACEMENT_OBJECT_LINK = 0x00000106 => "ReplacementObjectLink",
        REPLACED_OBJECT_LINK = 0x00000107 => "ReplacedObjectLink",
        PARENT_LINK = 0x00000108 => "ParentLink",
        CHILD_LINK = 0x00000109 => "ChildLink",
        PREVIOUS_LINK = 0x0000010A => "PreviousLink",
        NEXT_LINK = 0x0000010B => "NextLink",
        PKCS12_CERTIFICATE_LINK = 0x0000010C => "PKCS_12CertificateLink",
        PKCS12_PASSWORD_LINK = 0x0000010D => "PKCS_12PasswordLink",
        WRAPPING_KEY_LINK = 0x0000010E => "WrappingKeyLink",
    }
}

enumeration! {
    /// Values of `CERTIFICATE_TYPE`.
    certificate_type {
        X_509 = 0x00000001 => "X_509",
        PGP = 0x00000002 => "PGP",
    }
}

enumeration! {
    /// Values of `CERTIFICATE_REQUEST_TYPE`.
    certificate_request_type {
        CRMF = 0x00000001 => "CRMF",
        PKCS10 = 0x00000002 => "PKCS_10",
        PEM = 0x00000003 => "PEM",
        PGP = 0x00000004 => "PGP",
    }
}

enumeration! {
    /// Values of `KEY_COMPRESSION_TYPE`.
    key_compression_type {
        EC_PUBLIC_KEY_TYPE_UNCOMPRESSED = 0x00000001 => "ECPublicKeyTypeUncompressed",
        EC_PUBLIC_KEY_TYPE_X9_62_COMPRESSED_PRIME = 0x00000002 => "ECPublicKeyTypeX9_62CompressedPrime",
        EC_PUBLIC_KEY_TYPE_X9_62_COMPRESSED_CHAR2 = 0x00000003 => "ECPublicKeyTypeX9_62CompressedChar2",
        EC_PUBLIC_KEY_TYPE_X9_62_HYBRID = 0x00000004 => "ECPublicKeyTypeX9_62Hybrid",
    }
}

enumeration! {
    /// Values of `DIGITAL_SIGNATURE_ALGORITHM`.
    digital_signature_algorithm {
        MD2_WITH_RSA_ENCRYPTION = 0x00000001 => "MD2WithRSAEncryption",
        MD5_WITH_RSA_ENCRYPTION = 0x00000002 => "MD5WithRSAEncryption",
        SHA1_WITH_RSA_ENCRYPTION = 0x00000003 => "SHA1WithRSAEncryption",
        SHA224_WITH_RSA_ENCRYPTION = 0x00000004 => "SHA224WithRSAEncryption",
        SHA256_WITH_RSA_ENCRYPTION = 0x00000005 => "SHA256WithRSAEncryption",
        SHA384_WITH_RSA_ENCRYPTION = 0x00000006 => "SHA384WithRSAEncryption",
        SHA512_WITH_RSA_ENCRYPTION = 0x00000007 => "SHA512WithRSAEncryption",
        RSASSA_PSS = 0x00000008 => "RSASSA_PSS",
        DSA_WITH_SHA1 = 0x00000009 => "DSAWithSHA1",
        DSA_WITH_SHA224 = 0x0000000A => "DSAWithSHA224",
        DSA_WITH_SHA256 = 0x0000000B => "DSAWithSHA256",
        ECDSA_WITH_SHA1 = 0x0000000C => "ECDSAWithSHA1",
        ECDSA_WITH_SHA224 = 0x0000000D => "ECDSAWithSHA224",
        ECDSA_WITH_SHA256 = 0x0000000E => "ECDSAWithSHA256",
        ECDSA_WITH_SHA384 = 0x0000000F => "ECDSAWithSHA384",
        ECDSA_WITH_SHA512 = 0x00000010 => "ECDSAWithSHA512",
        SHA3_256_WITH_RSA_ENCRYPTION = 0x00000011 => "SHA3_256WithRSAEncryption",
        SHA3_384_WITH_RSA_ENCRYPTION = 0x00000012 => "SHA3_384WithRSAEncryption",
        SHA3_512_WITH_RSA_ENCRYPTION = 0x00000013 => "SHA3_512WithRSAEncryption",
    }
}

enumeration! {
    /// Values of `DERIVATION_METHOD`.
    derivation_method {
        PBKDF2 = 0x00000001 => "PBKDF2",
        HASH = 0x00000002 => "Hash",
        HMAC = 0x00000003 => "HMAC",
        ENCRYPT = 0x00000004 => "Encrypt",
        NIST800_108_C = 0x00000005 => "NIST800_108_C",
        NIST800_108_F = 0x00000006 => "NIST800_108_F",
        NIST800_108_DPI = 0x00000007 => "NIST800_108_DPI",
        ASYMMETRIC_KEY = 0x00000008 => "AsymmetricKey",
        AWS_SIGNATURE_VERSION_4 = 0x00000009 => "AWSSignatureVersion4",
        HKDF = 0x0000000A => "HKDF",
    }
}

enumeration! {
    /// Values of `USAGE_LIMITS_UNIT`.
    usage_limits_unit {
        BYTE = 0x00000001 => "Byte",
        OBJECT = 0x00000002 => "Object",
    }
}

enumeration! {
    /// Values of `VALIDITY_INDICATOR`.
    validity_indicator {
        VALID = 0x00000001 => "Valid",
        INVALID = 0x00000002 => "Invalid",
        UNKNOWN = 0x00000003 => "Unknown",
    }
}

enumeration! {
    /// Values of `CANCELLATION_RESULT`.
    cancellation_result {
        CANCELED = 0x00000001 => "Canceled",
        UNABLE_TO_CANCEL = 0x00000002 => "UnableToCancel",
        COMPLETED = 0x00000003 => "Completed",
        FAILED = 0x00000004 => "Failed",
        UNAVAILABLE = 0x00000005 => "Unavailable",
    }
}

enumeration! {
    /// Values of `PUT_FUNCTION`.
    put_function {
        NEW = 0x00000001 => "New",
        REPLACE = 0x00000002 => "Replace",
    }
}

enumeration! {
    /// Values of `SPLIT_KEY_METHOD`.
    split_key_method {
        XOR = 0x00000001 => "XOR",
        POLYNOMIAL_SHARING_GF_2_16 = 0x00000002 => "PolynomialSharingGF2_16",
        POLYNOMIAL_SHARING_PRIME_FIELD = 0x00000003 => "PolynomialSharingPrimeField",
        POLYNOMIAL_SHARING_GF_2_8 = 0x00000004 => "PolynomialSharingGF2_8",
    }
}

enumeration! {
    /// Values of `ALTERNATIVE_NAME_TYPE`.
    alternative_name_type {
        UNINTERPRETED_TEXT_STRING = 0x00000001 => "UninterpretedTextString",
        URI = 0x00000002 => "URI",
        OBJECT_SERIAL_NUMBER = 0x00000003 => "ObjectSerialNumber",
        EMAIL_ADDRESS = 0x00000004 => "EmailAddress",
        DNS_NAME = 0x00000005 => "DNSName",
        X500_DISTINGUISHED_NAME = 0x00000006 => "X_500DistinguishedName",
        IP_ADDRESS = 0x00000007 => "IPAddress",
    }
}

enumeration! {
    /// Values of `KEY_VALUE_LOCATION_TYPE`.
    key_value_location_type {
        UNINTERPRETED_TEXT_STRING = 0x00000001 => "UninterpretedTextString",
        URI = 0x00000002 => "URI",
    }
}

enumeration! {
    /// Values of `OBJECT_GROUP_MEMBER`.
    object_group_member {
        GROUP_MEMBER_FRESH = 0x00000001 => "GroupMemberFresh",
        GROUP_MEMBER_DEFAULT = 0x00000002 => "GroupMemberDefault",
    }
}

enumeration! {
    /// Values of `MASK_GENERATOR`.
    mask_generator {
        MGF1 = 0x00000001 => "MGF1",
    }
}

enumeration! {
    /// Values of `KEY_WRAP_TYPE`.
    key_wrap_type {
        NOT_WRAPPED = 0x00000001 => "NotWrapped",
        AS_REGISTERED = 0x00000002 => "AsRegistered",
    }
}

enumeration! {
    /// Values of `UNIQUE_IDENTIFIER`.
    unique_identifier {
        ID_PLACEHOLDER = 0x00000001 => "IDPlaceholder",
        CERTIFY = 0x00000002 => "Certify",
        CREATE = 0x00000003 => "Create",
        CREATE_KEY_PAIR = 0x00000004 => "CreateKeyPair",
        CREATE_KEY_PAIR_PRIVATE_KEY = 0x00000005 => "CreateKeyPairPrivateKey",
        CREATE_KEY_PAIR_PUBLIC_KEY = 0x00000006 => "CreateKeyPairPublicKey",
        CREATE_SPLIT_KEY = 0x00000007 => "CreateSplitKey",
        DERIVE_KEY = 0x00000008 => "DeriveKey",
        IMPORT = 0x00000009 => "Import",
        JOIN_SPLIT_KEY = 0x0000000A => "JoinSplitKey",
        LOCATE = 0x0000000B => "Locate",
        REGISTER = 0x0000000C => "Register",
        REKEY = 0x0000000D => "ReKey",
        RECERTIFY = 0x0000000E => "ReCertify",
        REKEY_KEY_PAIR = 0x0000000F => "ReKeyKeyPair",
        REKEY_KEY_PAIR_PRIVATE_KEY = 0x00000010 => "ReKeyKeyPairPrivateKey",
        REKEY_KEY_PAIR_PUBLIC_KEY = 0x00000011 => "ReKeyKeyPairPublicKey",
    }
}

mask! {
    /// Values of `CRYPTOGRAPHIC_USAGE_MASK`.
    cryptographic_usage_mask {
        SIGN = 0x00000001 => "Sign",
        VERIFY = 0x00000002 => "Verify",
        ENCRYPT = 0x00000004 => "Encrypt",
        DECRYPT = 0x00000008 => "Decrypt",
        WRAP_KEY = 0x00000010 => "WrapKey",
        UNWRAP_KEY = 0x00000020 => "UnwrapKey",
        EXPORT = 0x00000040 => "Export",
        MAC_GENERATE = 0x00000080 => "MACGenerate",
        MAC_VERIFY = 0x00000100 => "MACVerify",
        DERIVE_KEY = 0x00000200 => "DeriveKey",
        CONTENT_COMMITMENT = 0x00000400 => "ContentCommitment",
        KEY_AGREEMENT = 0x00000800 => "KeyAgreement",
        CERTIFICATE_SIGN = 0x00001000 => "CertificateSign",
        CRL_SIGN = 0x00002000 => "CRLSign",
        GENERATE_CRYPTOGRAM = 0x00004000 => "GenerateCryptogram",
        VALIDATE_CRYPTOGRAM = 0x00008000 => "ValidateCryptogram",
        TRANSLATE_ENCRYPT = 0x00010000 => "TranslateEncrypt",
        TRANSLATE_DECRYPT = 0x00020000 => "TranslateDecrypt",
        TRANSLATE_WRAP = 0x00040000 => "TranslateWrap",
        TRANSLATE_UNWRAP = 0x00080000 => "TranslateUnwrap",
        AUTHENTICATE = 0x00100000 => "Authenticate",
        UNRESTRICTED = 0x00200000 => "Unrestricted",
        FPE_ENCRYPT = 0x00400000 => "FPEEncrypt",
        FPE_DECRYPT = 0x00800000 => "FPEDecrypt",
    }
}

mask! {
    /// Values of `STORAGE_STATUS_MASK`.
    storage_status_mask {
        ONLINE_STORAGE = 0x00000001 => "OnlineStorage",
        ARCHIVAL_STORAGE = 0x00000002 => "ArchivalStorage",
        DESTROYED_STORAGE = 0x00000004 => "DestroyedStorage",
    }
}

mask! {
    /// Values of `PROTECTION_STORAGE_MASK`.
    protection_storage_mask {
        SOFTWARE = 0x00000001 => "Software",
        HARDWARE = 0x00000002 => "Hardware",
        ON_PROCESSOR = 0x00000004 => "OnProcessor",
        ON_SYSTEM = 0x00000008 => "OnSystem",
        OFF_SYSTEM = 0x00000010 => "OffSystem",
        HYPERVISOR = 0x00000020 => "Hypervisor",
        OPERATING_SYSTEM = 0x00000040 => "OperatingSystem",
        CONTAINER = 0x00000080 => "Container",
        ON_PREMISES = 0x00000100 => "OnPremises",
        OFF_PREMISES = 0x00000200 => "OffPremises",
        SELF_MANAGED = 0x00000400 => "SelfManaged",
        OUTSOURCED = 0x00000800 => "Outsourced",
        VALIDATED = 0x00001000 => "Validated",
        SAME_JURISDICTION = 0x00002000 => "SameJurisdiction",
    }
}

/// The value table of the enumeration carried by `tag`, for
/// Enumeration-typed tags this module knows.
pub fn enum_table(tag: Tag) -> Option<&'static [(u32, &'static str)]> {
    Some(match tag {
        OPERATION => operation::NAMES,
        OBJECT_TYPE => object_type::NAMES,
        CRYPTOGRAPHIC_ALGORITHM => cryptographic_algorithm::NAMES,
        RESULT_STATUS => result_status::NAMES,
        RESULT_REASON => result_reason::NAMES,
        BLOCK_CIPHER_MODE => block_cipher_mode::NAMES,
        PADDING_METHOD => padding_method::NAMES,
        HASHING_ALGORITHM | MASK_GENERATOR_HASHING_ALGORITHM => hashing_algorithm::NAMES,
        KEY_FORMAT_TYPE => key_format_type::NAMES,
        STATE => state::NAMES,
        REVOCATION_REASON_CODE => revocation_reason_code::NAMES,
        NAME_TYPE => name_type::NAMES,
        QUERY_FUNCTION => query_function::NAMES,
        KEY_ROLE_TYPE => key_role_type::NAMES,
        WRAPPING_METHOD => wrapping_method::NAMES,
        ENCODING_OPTION => encoding_option::NAMES,
        CREDENTIAL_TYPE => credential_type::NAMES,
        BATCH_ERROR_CONTINUATION_OPTION => batch_error_continuation_option::NAMES,
        SECRET_DATA_TYPE => secret_data_type::NAMES,
        LINK_TYPE => link_type::NAMES,
        CERTIFICATE_TYPE => certificate_type::NAMES,
        CERTIFICATE_REQUEST_TYPE => certificate_request_type::NAMES,
        KEY_COMPRESSION_TYPE => key_compression_type::NAMES,
        DIGITAL_SIGNATURE_ALGORITHM => digital_signature_algorithm::NAMES,
        DERIVATION_METHOD => derivation_method::NAMES,
        USAGE_LIMITS_UNIT => usage_limits_unit::NAMES,
        VALIDITY_INDICATOR => validity_indicator::NAMES,
        CANCELLATION_RESULT => cancellation_result::NAMES,
        PUT_FUNCTION => put_function::NAMES,
        SPLIT_KEY_METHOD => split_key_method::NAMES,
        ALTERNATIVE_NAME_TYPE => alternative_name_type::NAMES,
        KEY_VALUE_LOCATION_TYPE => key_value_location_type::NAMES,
        OBJECT_GROUP_MEMBER => object_group_member::NAMES,
        MASK_GENERATOR => mask_generator::NAMES,
        KEY_WRAP_TYPE => key_wrap_type::NAMES,
        UNIQUE_IDENTIFIER => unique_identifier::NAMES,
        _ => return None,
    })
}

/// The name of enumeration value `value` of `tag` (e.g. `Operation`, 0x0A →
/// `"Get"`). `None` for unknown tags, unknown values and extensions
/// (`0x8xxxxxxx`).
pub fn enum_name(tag: Tag, value: u32) -> Option<&'static str> {
    enum_table(tag)?
        .iter()
        .find(|(v, _)| *v == value)
        .map(|(_, n)| *n)
}

/// The value of the enumeration value called `name` under `tag`.
pub fn enum_value(tag: Tag, name: &str) -> Option<u32> {
    enum_table(tag)?
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(v, _)| *v)
}

/// The flag table of the bit mask carried by `tag` (Integer-typed tags such
/// as `CryptographicUsageMask`).
pub fn mask_table(tag: Tag) -> Option<&'static [(u32, &'static str)]> {
    Some(match tag {
        CRYPTOGRAPHIC_USAGE_MASK => cryptographic_usage_mask::NAMES,
        STORAGE_STATUS_MASK => storage_status_mask::NAMES,
        PROTECTION_STORAGE_MASK => protection_storage_mask::NAMES,
        _ => return None,
    })
}

/// The names of the flags set in `value` for a bit-mask tag, plus the
/// leftover bits no flag accounts for. `None` if `tag` is not a mask.
pub fn mask_names(tag: Tag, value: u32) -> Option<(Vec<&'static str>, u32)> {
    let table = mask_table(tag)?;
    let mut rest = value;
    let mut names = Vec::new();
    for (bit, name) in table {
        if value & bit != 0 {
            names.push(*name);
            rest &= !bit;
        }
    }
    Some((names, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_table_sorted_unique_and_round_trips() {
        assert!(
            TAGS.windows(2).all(|w| w[0].0 < w[1].0),
            "TAGS must be strictly sorted by tag"
        );
        for (tag, name) in TAGS {
            assert_eq!(tag_name(*tag), Some(*name));
            assert_eq!(tag_by_name(name), Some(*tag), "duplicate name {name}");
            assert_eq!(tag.0 >> 16, 0x42);
        }
        assert!(TAGS.len() > 340);
    }

    #[test]
    fn known_names() {
        assert_eq!(tag_name(REQUEST_MESSAGE), Some("RequestMessage"));
        assert_eq!(tag_name(Tag(0x42007B)), Some("ResponseMessage"));
        assert_eq!(tag_name(BATCH_ITEM), Some("BatchItem"));
        assert_eq!(
            tag_name(X_509_CERTIFICATE_IDENTIFIER),
            Some("X_509CertificateIdentifier")
        );
        assert_eq!(
            tag_name(PROTECTION_STORAGE_MASKS),
            Some("ProtectionStorageMasks")
        );
        assert_eq!(tag_name(Tag(0x420000)), None);
        assert_eq!(tag_name(Tag(0x540000)), None);
        assert_eq!(tag_by_name("UniqueIdentifier"), Some(UNIQUE_IDENTIFIER));
        assert_eq!(tag_by_name("uniqueidentifier"), None);
    }

    #[test]
    fn enumerations() {
        assert_eq!(enum_name(OPERATION, operation::GET), Some("Get"));
        assert_eq!(
            enum_name(OBJECT_TYPE, object_type::SYMMETRIC_KEY),
            Some("SymmetricKey")
        );
        assert_eq!(
            enum_name(CRYPTOGRAPHIC_ALGORITHM, cryptographic_algorithm::TRIPLE_DES),
            Some("DES3")
        );
        assert_eq!(
            enum_name(RESULT_STATUS, result_status::SUCCESS),
            Some("Success")
        );
        assert_eq!(
            enum_name(RESULT_REASON, result_reason::GENERAL_FAILURE),
            Some("GeneralFailure")
        );
        assert_eq!(
            enum_name(MASK_GENERATOR_HASHING_ALGORITHM, hashing_algorithm::SHA_256),
            Some("SHA_256")
        );
        assert_eq!(enum_name(OPERATION, 0x8000_0001), None);
        assert_eq!(enum_name(UNIQUE_BATCH_ITEM_ID, 1), None);
        assert_eq!(enum_value(STATE, "PreActive"), Some(state::PRE_ACTIVE));
        // Within each table values and names are unique.
        for t in TAGS.iter().map(|(t, _)| *t) {
            for table in [enum_table(t), mask_table(t)].into_iter().flatten() {
                for (i, (v, n)) in table.iter().enumerate() {
                    assert!(
                        table[i + 1..].iter().all(|(v2, n2)| v2 != v && n2 != n),
                        "{t:?}: {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn masks() {
        let m = cryptographic_usage_mask::ENCRYPT | cryptographic_usage_mask::DECRYPT | 0x8000_0000;
        assert_eq!(
            mask_names(CRYPTOGRAPHIC_USAGE_MASK, m),
            Some((vec!["Encrypt", "Decrypt"], 0x8000_0000))
        );
        assert_eq!(mask_names(OPERATION, 1), None);
    }
}
