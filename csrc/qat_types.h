/*
 * qatpy's own declarations of the qatlib types it uses (qatlib 26.08, CPA API
 * 5.9, x86_64), written from the facts qatlib's headers state (cpa_types.h,
 * cpa.h, cpa_cy_common.h, cpa_cy_im.h, cpa_cy_rsa.h, cpa_cy_ec.h,
 * cpa_cy_ecdsa.h, qae_mem.h); nothing here is copied from them.  Checked
 * against sizes and offsets measured on those headers by
 * tests/test_abi_layout.py.
 *
 * This file is fed verbatim to cffi's cdef() as well as to the C compiler, so
 * it holds declarations and integer #defines only: no #include, no #if, no
 * expressions in #define.  Include it through qat_abi.h from C.
 */
/* ---- base types (cpa_types.h facts) ---------------------------------- */
typedef uint8_t Cpa8U;
typedef int8_t Cpa8S;
typedef uint16_t Cpa16U;
typedef int16_t Cpa16S;
typedef uint32_t Cpa32U;
typedef int32_t Cpa32S;
typedef uint64_t Cpa64U;
typedef int64_t Cpa64S;

/* CpaBoolean is an enum, 4 bytes, FALSE = 0, TRUE = 1. */
typedef enum { CPA_FALSE = 0, CPA_TRUE = 1 } CpaBoolean;

typedef void *CpaInstanceHandle;
typedef Cpa64U CpaPhysicalAddr;
typedef CpaPhysicalAddr (*CpaVirtualToPhysical)(void *pVirtualAddr);

typedef Cpa32S CpaStatus;
#define CPA_STATUS_SUCCESS 0
#define CPA_STATUS_FAIL -1
#define CPA_STATUS_RETRY -2
#define CPA_STATUS_RESOURCE -3
#define CPA_STATUS_INVALID_PARAM -4
#define CPA_STATUS_FATAL -5
#define CPA_STATUS_UNSUPPORTED -6
#define CPA_STATUS_RESTARTING -7
#define CPA_STATUS_MAX_STR_LENGTH_IN_BYTES 255

#define NUMA_ANY_NODE -1

/* ---- enums (all 4 bytes on x86_64) ----------------------------------- */
typedef enum {
    CPA_ACC_SVC_TYPE_CRYPTO = 0,
    CPA_ACC_SVC_TYPE_DATA_COMPRESSION = 1,
    CPA_ACC_SVC_TYPE_RAID = 2,
    CPA_ACC_SVC_TYPE_XML = 3,
    CPA_ACC_SVC_TYPE_PATTERN_MATCH = 4,
    CPA_ACC_SVC_TYPE_VIDEO_ANALYTICS = 4,
    CPA_ACC_SVC_TYPE_CRYPTO_ASYM = 5,
    CPA_ACC_SVC_TYPE_CRYPTO_SYM = 6,
    CPA_ACC_SVC_TYPE_DATA_DECOMPRESSION = 7
} CpaAccelerationServiceType;

typedef enum { CPA_OPER_STATE_DOWN = 0, CPA_OPER_STATE_UP = 1 } CpaOperationalState;

typedef enum {
    CPA_INSTANCE_EVENT_RESTARTING = 0,
    CPA_INSTANCE_EVENT_RESTARTED = 1,
    CPA_INSTANCE_EVENT_FATAL_ERROR = 2
} CpaInstanceEvent;

typedef enum {
    CPA_INST_RX_NOTIFY_NONE = 1,
    CPA_INST_RX_NOTIFY_BY_EVENT = 2
} CpaInstanceResponseMode;

typedef enum { CPA_CY_PRIORITY_NORMAL = 1, CPA_CY_PRIORITY_HIGH = 2 } CpaCyPriority;

typedef enum { CPA_CY_RSA_VERSION_TWO_PRIME = 1 } CpaCyRsaVersion;

typedef enum {
    CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_1 = 1,
    CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_2 = 2
} CpaCyRsaPrivateKeyRepType;

typedef enum { CPA_CY_EC_FIELD_TYPE_PRIME = 1, CPA_CY_EC_FIELD_TYPE_BINARY = 2 } CpaCyEcFieldType;

#define CPA_INST_VENDOR_NAME_SIZE 64
#define CPA_INST_PART_NAME_SIZE 64
#define CPA_INST_SW_VERSION_SIZE 64
#define CPA_INST_NAME_SIZE 64
#define CPA_INST_ID_SIZE 128
#define CPA_MAX_CORES 4096

/* ---- structs ---------------------------------------------------------- */
/* 16 bytes: length @0, 4 bytes padding, pointer @8. */
typedef struct {
    Cpa32U dataLenInBytes;
    Cpa8U *pData;
} CpaFlatBuffer;

typedef struct {
    Cpa16U packageId;
    Cpa16U acceleratorId;
    Cpa16U executionEngineId;
    Cpa16U busAddress;
    Cpa32U kptAcHandle;
} CpaPhysicalInstanceId; /* 12 bytes, align 4 */

typedef struct {
    CpaAccelerationServiceType accelerationServiceType;
    Cpa8U vendorName[CPA_INST_VENDOR_NAME_SIZE];
    Cpa8U partName[CPA_INST_PART_NAME_SIZE];
    Cpa8U swVersion[CPA_INST_SW_VERSION_SIZE];
    Cpa8U instName[CPA_INST_NAME_SIZE];
    Cpa8U instID[CPA_INST_ID_SIZE];
    CpaPhysicalInstanceId physInstId;
    Cpa32U coreAffinity[128]; /* bitmap, 512 bytes */
    Cpa32U nodeAffinity;
    CpaOperationalState operState;
    CpaBoolean requiresPhysicallyContiguousMemory;
    CpaBoolean isPolled;
    CpaBoolean isOffloaded;
} CpaInstanceInfo2; /* 932 bytes, align 4 */

typedef struct {
    CpaBoolean symSupported;
    CpaBoolean symDpSupported;
    CpaBoolean dhSupported;
    CpaBoolean dsaSupported;
    CpaBoolean rsaSupported;
    CpaBoolean ecSupported;
    CpaBoolean ecdhSupported;
    CpaBoolean ecdsaSupported;
    CpaBoolean keySupported;
    CpaBoolean lnSupported;
    CpaBoolean primeSupported;
    CpaBoolean drbgSupported;
    CpaBoolean nrbgSupported;
    CpaBoolean randSupported;
    CpaBoolean kptSupported;
    CpaBoolean hkdfSupported;
    CpaBoolean extAlgchainSupported;
    CpaBoolean ecEdMontSupported;
    CpaBoolean ecSm2Supported;
} CpaCyCapabilitiesInfo; /* 76 bytes */

typedef struct {
    CpaFlatBuffer modulusN;
    CpaFlatBuffer publicExponentE;
} CpaCyRsaPublicKey;

typedef struct {
    CpaFlatBuffer modulusN;
    CpaFlatBuffer privateExponentD;
} CpaCyRsaPrivateKeyRep1;

typedef struct {
    CpaFlatBuffer prime1P;
    CpaFlatBuffer prime2Q;
    CpaFlatBuffer exponent1Dp;
    CpaFlatBuffer exponent2Dq;
    CpaFlatBuffer coefficientQInv;
} CpaCyRsaPrivateKeyRep2;

typedef struct {
    CpaCyRsaVersion version;
    CpaCyRsaPrivateKeyRepType privateKeyRepType;
    CpaCyRsaPrivateKeyRep1 privateKeyRep1;
    CpaCyRsaPrivateKeyRep2 privateKeyRep2;
} CpaCyRsaPrivateKey; /* 120 bytes */

typedef struct {
    CpaCyRsaPrivateKey *pRecipientPrivateKey;
    CpaFlatBuffer inputData;
} CpaCyRsaDecryptOpData;

typedef struct {
    CpaCyRsaPublicKey *pPublicKey;
    CpaFlatBuffer inputData;
} CpaCyRsaEncryptOpData;

typedef struct {
    CpaFlatBuffer xg;
    CpaFlatBuffer yg;
    CpaFlatBuffer n;
    CpaFlatBuffer q;
    CpaFlatBuffer a;
    CpaFlatBuffer b;
    CpaFlatBuffer k;
    CpaFlatBuffer m;
    CpaFlatBuffer d;
    CpaCyEcFieldType fieldType;
} CpaCyEcdsaSignRSOpData; /* 152 bytes */

typedef struct {
    CpaFlatBuffer xg;
    CpaFlatBuffer yg;
    CpaFlatBuffer n;
    CpaFlatBuffer q;
    CpaFlatBuffer a;
    CpaFlatBuffer b;
    CpaFlatBuffer m;
    CpaFlatBuffer r;
    CpaFlatBuffer s;
    CpaFlatBuffer xp;
    CpaFlatBuffer yp;
    CpaCyEcFieldType fieldType;
} CpaCyEcdsaVerifyOpData; /* 184 bytes */

/* ---- callbacks -------------------------------------------------------- */
typedef void (*CpaCyGenFlatBufCbFunc)(void *pCallbackTag, CpaStatus status, void *pOpdata,
                                      CpaFlatBuffer *pOut);
typedef void (*CpaCyGenericCbFunc)(void *pCallbackTag, CpaStatus status, void *pOpData);
typedef void (*CpaCyEcdsaSignRSCbFunc)(void *pCallbackTag, CpaStatus status, void *pOpData,
                                       CpaBoolean multiplyStatus, CpaFlatBuffer *pR,
                                       CpaFlatBuffer *pS);
typedef void (*CpaCyEcdsaVerifyCbFunc)(void *pCallbackTag, CpaStatus status, void *pOpData,
                                       CpaBoolean verifyStatus);
typedef void (*CpaCyInstanceNotificationCbFunc)(const CpaInstanceHandle instanceHandle,
                                                void *pCallbackTag,
                                                const CpaInstanceEvent instanceEvent);

