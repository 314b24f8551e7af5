/*
 * C entry point to qatpy's declarations of the qatlib ABI: the types
 * (qat_types.h), the prototypes (qat_api.h) and, derived from those
 * prototypes, one function-pointer type per entry point for the shim's
 * dlsym table.  Deriving them with __typeof__ means a prototype and its
 * pointer type can never disagree.
 */
#ifndef QATPY_QAT_ABI_H
#define QATPY_QAT_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "qat_types.h"
#include "qat_api.h"

#define CPA_INSTANCE_HANDLE_SINGLE ((CpaInstanceHandle)0)

#define QATPY_FN(name) qatpy_fn_##name
#define QATPY_DECLARE_FN(name) typedef __typeof__(&name) QATPY_FN(name)

QATPY_DECLARE_FN(icp_sal_userStart);
QATPY_DECLARE_FN(icp_sal_userStop);
QATPY_DECLARE_FN(icp_sal_userIsQatAvailable);
QATPY_DECLARE_FN(cpaGetNumInstances);
QATPY_DECLARE_FN(cpaGetInstances);
QATPY_DECLARE_FN(cpaCyGetNumInstances);
QATPY_DECLARE_FN(cpaCyGetInstances);
QATPY_DECLARE_FN(cpaCyInstanceGetInfo2);
QATPY_DECLARE_FN(cpaCyQueryCapabilities);
QATPY_DECLARE_FN(cpaCySetAddressTranslation);
QATPY_DECLARE_FN(cpaCyStartInstance);
QATPY_DECLARE_FN(cpaCyStopInstance);
QATPY_DECLARE_FN(cpaCyGetStatusText);
QATPY_DECLARE_FN(cpaCyInstanceSetNotificationCb);
QATPY_DECLARE_FN(cpaInstanceSetResponseMode);
QATPY_DECLARE_FN(cpaInstanceGetResponseMode);
QATPY_DECLARE_FN(cpaCyRsaDecrypt);
QATPY_DECLARE_FN(cpaCyRsaEncrypt);
QATPY_DECLARE_FN(cpaCyEcdsaSignRS);
QATPY_DECLARE_FN(cpaCyEcdsaVerify);
QATPY_DECLARE_FN(icp_sal_CyPollInstance);
QATPY_DECLARE_FN(icp_sal_CyGetFileDescriptor);
QATPY_DECLARE_FN(icp_sal_CyPutFileDescriptor);
QATPY_DECLARE_FN(icp_sal_poll_device_events);
QATPY_DECLARE_FN(icp_sal_check_device);
QATPY_DECLARE_FN(icp_sal_check_all_devices);
QATPY_DECLARE_FN(qaeMemAllocNUMA);
QATPY_DECLARE_FN(qaeMemFreeNUMA);
QATPY_DECLARE_FN(qaeMemFreeNonZeroNUMA);
QATPY_DECLARE_FN(qaeVirtToPhysNUMA);

#endif /* QATPY_QAT_ABI_H */
