/*
 * Prototypes of the qatlib entry points qatpy uses, as exported by
 * libqat.so.4 (cpa*, icp_sal_*) and libusdm.so.0 (qae*).  Our own text,
 * from the signatures qatlib documents in cpa.h, cpa_cy_common.h,
 * cpa_cy_im.h, cpa_cy_rsa.h, cpa_cy_ecdsa.h, icp_sal_user.h, icp_sal_poll.h
 * and qae_mem.h.
 *
 * Nothing in qatpy links against these: the simulated device defines them
 * (and the compiler checks each definition against this prototype), the
 * shim derives its function-pointer types from them with __typeof__ and
 * resolves the real addresses with dlsym.  Parsable by cffi's cdef().
 */

/* libqat.so.4: process and instance control */
CpaStatus icp_sal_userStart(const char *pProcessName);
CpaStatus icp_sal_userStop(void);
CpaBoolean icp_sal_userIsQatAvailable(void);
CpaStatus cpaGetNumInstances(const CpaAccelerationServiceType accelerationServiceType,
                             Cpa16U *pNumInstances);
CpaStatus cpaGetInstances(const CpaAccelerationServiceType accelerationServiceType,
                          Cpa16U numInstances, CpaInstanceHandle *cpaInstances);
CpaStatus cpaCyGetNumInstances(Cpa16U *pNumInstances);
CpaStatus cpaCyGetInstances(Cpa16U numInstances, CpaInstanceHandle *cyInstances);
CpaStatus cpaCyInstanceGetInfo2(const CpaInstanceHandle instanceHandle,
                                CpaInstanceInfo2 *pInstanceInfo2);
CpaStatus cpaCyQueryCapabilities(const CpaInstanceHandle instanceHandle,
                                 CpaCyCapabilitiesInfo *pCapInfo);
CpaStatus cpaCySetAddressTranslation(const CpaInstanceHandle instanceHandle,
                                     CpaVirtualToPhysical virtual2Physical);
CpaStatus cpaCyStartInstance(CpaInstanceHandle instanceHandle);
CpaStatus cpaCyStopInstance(CpaInstanceHandle instanceHandle);
CpaStatus cpaCyGetStatusText(const CpaInstanceHandle instanceHandle, CpaStatus errStatus,
                             Cpa8S *pStatusText);
CpaStatus cpaCyInstanceSetNotificationCb(const CpaInstanceHandle instanceHandle,
                                         const CpaCyInstanceNotificationCbFunc pInstanceNotificationCb,
                                         void *pCallbackTag);
/* 26.02+, optional at run time */
CpaStatus cpaInstanceSetResponseMode(const CpaInstanceHandle instanceHandle,
                                     const CpaAccelerationServiceType accelerationServiceType,
                                     const CpaInstanceResponseMode responseMode);
CpaStatus cpaInstanceGetResponseMode(const CpaInstanceHandle instanceHandle,
                                     const CpaAccelerationServiceType accelerationServiceType,
                                     CpaInstanceResponseMode *pResponseMode);

/* libqat.so.4: operations */
CpaStatus cpaCyRsaDecrypt(const CpaInstanceHandle instanceHandle,
                          const CpaCyGenFlatBufCbFunc pRsaDecryptCb, void *pCallbackTag,
                          const CpaCyRsaDecryptOpData *pDecryptOpData,
                          CpaFlatBuffer *pOutputData);
CpaStatus cpaCyRsaEncrypt(const CpaInstanceHandle instanceHandle,
                          const CpaCyGenFlatBufCbFunc pRsaEncryptCb, void *pCallbackTag,
                          const CpaCyRsaEncryptOpData *pEncryptOpData,
                          CpaFlatBuffer *pOutputData);
CpaStatus cpaCyEcdsaSignRS(const CpaInstanceHandle instanceHandle,
                           const CpaCyEcdsaSignRSCbFunc pCb, void *pCallbackTag,
                           const CpaCyEcdsaSignRSOpData *pOpData, CpaBoolean *pSignStatus,
                           CpaFlatBuffer *pR, CpaFlatBuffer *pS);
CpaStatus cpaCyEcdsaVerify(const CpaInstanceHandle instanceHandle,
                           const CpaCyEcdsaVerifyCbFunc pCb, void *pCallbackTag,
                           const CpaCyEcdsaVerifyOpData *pOpData, CpaBoolean *pVerifyStatus);

/* libqat.so.4: polling */
CpaStatus icp_sal_CyPollInstance(CpaInstanceHandle instanceHandle, Cpa32U response_quota);
CpaStatus icp_sal_CyGetFileDescriptor(CpaInstanceHandle instanceHandle, int *fd);
CpaStatus icp_sal_CyPutFileDescriptor(CpaInstanceHandle instanceHandle, int fd);

/* libqat.so.4: device events and the heartbeat (icp_sal_user.h), optional
 * at run time.  check_* return CPA_STATUS_UNSUPPORTED where the heartbeat
 * is not available (a VM, no driver heartbeat files) and FAIL for a device
 * found unresponsive, which the driver then restarts; packageId is
 * CpaInstanceInfo2.physInstId.packageId.  Instances learn of a restart
 * through their notification callbacks, called only from inside
 * icp_sal_poll_device_events (not thread-safe, not reentrant). */
CpaStatus icp_sal_poll_device_events(void);
CpaStatus icp_sal_check_device(Cpa32U packageId);
CpaStatus icp_sal_check_all_devices(void);

/* libusdm.so.0: DMA-able memory */
void *qaeMemAllocNUMA(size_t size, int node, size_t phys_alignment_byte);
void qaeMemFreeNUMA(void **ptr);
void qaeMemFreeNonZeroNUMA(void **ptr);
uint64_t qaeVirtToPhysNUMA(void *pVirtAddr);
