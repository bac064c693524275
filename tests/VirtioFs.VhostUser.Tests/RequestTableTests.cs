namespace VirtioFs.VhostUser.Tests;

/// <summary>
/// <see cref="VhostUserRequestTable"/> checked against the lists qemu docs/interop/vhost-user.rst gives (section
/// "Communication": the requests that require replies and those sent with file descriptors; "Front-end message
/// types": each request's id, payload and reply payload), transcribed here by hand so a table edit that drifts from
/// the spec fails.
/// </summary>
public class RequestTableTests
{
    /// <summary>Every front-end request we implement, by its spec id and name.</summary>
    public static TheoryData<uint, string> Implemented => new()
    {
        { 1, "VHOST_USER_GET_FEATURES" }, { 2, "VHOST_USER_SET_FEATURES" }, { 3, "VHOST_USER_SET_OWNER" },
        { 4, "VHOST_USER_RESET_OWNER" }, { 5, "VHOST_USER_SET_MEM_TABLE" }, { 6, "VHOST_USER_SET_LOG_BASE" },
        { 7, "VHOST_USER_SET_LOG_FD" }, { 8, "VHOST_USER_SET_VRING_NUM" }, { 9, "VHOST_USER_SET_VRING_ADDR" },
        { 10, "VHOST_USER_SET_VRING_BASE" }, { 11, "VHOST_USER_GET_VRING_BASE" }, { 12, "VHOST_USER_SET_VRING_KICK" },
        { 13, "VHOST_USER_SET_VRING_CALL" }, { 14, "VHOST_USER_SET_VRING_ERR" }, { 15, "VHOST_USER_GET_PROTOCOL_FEATURES" },
        { 16, "VHOST_USER_SET_PROTOCOL_FEATURES" }, { 17, "VHOST_USER_GET_QUEUE_NUM" }, { 18, "VHOST_USER_SET_VRING_ENABLE" },
        { 21, "VHOST_USER_SET_BACKEND_REQ_FD" }, { 24, "VHOST_USER_GET_CONFIG" }, { 25, "VHOST_USER_SET_CONFIG" },
        { 34, "VHOST_USER_RESET_DEVICE" }, { 35, "VHOST_USER_VRING_KICK" }, { 36, "VHOST_USER_GET_MAX_MEM_SLOTS" },
        { 37, "VHOST_USER_ADD_MEM_REG" }, { 38, "VHOST_USER_REM_MEM_REG" }, { 39, "VHOST_USER_SET_STATUS" },
        { 40, "VHOST_USER_GET_STATUS" },
    };

    /// <summary>
    /// Requests whose reply carries a body whatever REPLY_ACK says: the "Communication" list (GET_FEATURES,
    /// GET_PROTOCOL_FEATURES, GET_VRING_BASE, SET_LOG_BASE if LOG_SHMFD) and the requests whose ":reply payload:" is
    /// not N/A. Left out on purpose: SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG reply only in postcopy mode, which
    /// needs VHOST_USER_PROTOCOL_F_PAGEFAULT, which we do not offer.
    /// </summary>
    private static readonly Dictionary<VhostUserRequest, ReplyShape> SpecReplies = new()
    {
        [VhostUserRequest.GetFeatures] = ReplyShape.U64,
        [VhostUserRequest.GetProtocolFeatures] = ReplyShape.U64,
        [VhostUserRequest.GetVringBase] = ReplyShape.VringState,
        [VhostUserRequest.SetLogBase] = ReplyShape.U64IfLogShmfd,
        [VhostUserRequest.GetQueueNum] = ReplyShape.U64,
        [VhostUserRequest.GetConfig] = ReplyShape.Config,
        [VhostUserRequest.GetMaxMemSlots] = ReplyShape.U64,
        [VhostUserRequest.GetStatus] = ReplyShape.U64,
    };

    /// <summary>
    /// Requests sent with file descriptors ("Communication" list, and the per-request text for how many): one per
    /// region for SET_MEM_TABLE; exactly one for ADD_MEM_REG, SET_LOG_FD and SET_BACKEND_REQ_FD; one unless the
    /// invalid-FD flag (bit 8) is set for the three vring files; SET_LOG_BASE only with LOG_SHMFD; and REM_MEM_REG,
    /// which "SHOULD" carry none but "MAY" carry one for compatibility (closed unused).
    /// </summary>
    private static readonly Dictionary<VhostUserRequest, FdRule> SpecFds = new()
    {
        [VhostUserRequest.SetMemTable] = FdRule.OnePerRegion,
        [VhostUserRequest.AddMemReg] = FdRule.One,
        [VhostUserRequest.SetLogFd] = FdRule.One,
        [VhostUserRequest.SetBackendReqFd] = FdRule.One,
        [VhostUserRequest.SetVringKick] = FdRule.OneUnlessNoFdFlag,
        [VhostUserRequest.SetVringCall] = FdRule.OneUnlessNoFdFlag,
        [VhostUserRequest.SetVringErr] = FdRule.OneUnlessNoFdFlag,
        [VhostUserRequest.SetLogBase] = FdRule.Optional,
        [VhostUserRequest.RemMemReg] = FdRule.Optional,
    };

    /// <summary>Each request's ":request payload:" (ADD/REM_MEM_REG say N/A there, but their text describes a single
    /// memory region description, which is what QEMU sends).</summary>
    private static readonly Dictionary<VhostUserRequest, PayloadRule> SpecPayloads = new()
    {
        [VhostUserRequest.GetFeatures] = PayloadRule.Empty,
        [VhostUserRequest.SetFeatures] = PayloadRule.U64,
        [VhostUserRequest.SetOwner] = PayloadRule.Empty,
        [VhostUserRequest.ResetOwner] = PayloadRule.Empty,
        [VhostUserRequest.SetMemTable] = PayloadRule.MemoryTable,
        [VhostUserRequest.SetLogBase] = PayloadRule.Log,
        [VhostUserRequest.SetLogFd] = PayloadRule.FdOnly,
        [VhostUserRequest.SetVringNum] = PayloadRule.VringState,
        [VhostUserRequest.SetVringAddr] = PayloadRule.VringAddress,
        [VhostUserRequest.SetVringBase] = PayloadRule.VringState,
        [VhostUserRequest.GetVringBase] = PayloadRule.VringState,
        [VhostUserRequest.SetVringKick] = PayloadRule.VringFile,
        [VhostUserRequest.SetVringCall] = PayloadRule.VringFile,
        [VhostUserRequest.SetVringErr] = PayloadRule.VringFile,
        [VhostUserRequest.GetProtocolFeatures] = PayloadRule.Empty,
        [VhostUserRequest.SetProtocolFeatures] = PayloadRule.U64,
        [VhostUserRequest.GetQueueNum] = PayloadRule.Empty,
        [VhostUserRequest.SetVringEnable] = PayloadRule.VringState,
        [VhostUserRequest.SetBackendReqFd] = PayloadRule.FdOnly,
        [VhostUserRequest.GetConfig] = PayloadRule.Config,
        [VhostUserRequest.SetConfig] = PayloadRule.Config,
        [VhostUserRequest.ResetDevice] = PayloadRule.Empty,
        [VhostUserRequest.VringKick] = PayloadRule.VringState,
        [VhostUserRequest.GetMaxMemSlots] = PayloadRule.Empty,
        [VhostUserRequest.AddMemReg] = PayloadRule.SingleRegion,
        [VhostUserRequest.RemMemReg] = PayloadRule.SingleRegion,
        [VhostUserRequest.SetStatus] = PayloadRule.U64,
        [VhostUserRequest.GetStatus] = PayloadRule.Empty,
    };

    [Fact]
    public void The_table_holds_exactly_the_requests_we_implement_in_id_order()
    {
        uint[] expected = Implemented.Select(row => (uint)row[0]).ToArray();
        Assert.Equal(expected, VhostUserRequestTable.All.Select(s => (uint)s.Request));
    }

    [Theory]
    [MemberData(nameof(Implemented))]
    public void Each_row_has_the_spec_name_reply_fds_and_payload(uint id, string specName)
    {
        var request = (VhostUserRequest)id;
        Assert.True(VhostUserRequestTable.TryGet(request, out VhostUserRequestSpec spec));
        Assert.Equal(request, spec.Request);
        Assert.Equal(specName, spec.SpecName);
        Assert.Equal(SpecReplies.GetValueOrDefault(request, ReplyShape.AckIfAsked), spec.Reply);
        Assert.Equal(SpecFds.GetValueOrDefault(request, FdRule.None), spec.Fds);
        Assert.Equal(SpecPayloads[request], spec.Payload);
    }

    [Theory]
    [InlineData(0u)]   // VHOST_USER_NONE
    [InlineData(19u)]  // SEND_RARP (net)
    [InlineData(22u)]  // IOTLB_MSG: we do not offer VIRTIO_F_IOMMU_PLATFORM
    [InlineData(31u)]  // GET_INFLIGHT_FD: no INFLIGHT_SHMFD
    [InlineData(41u)]
    [InlineData(uint.MaxValue)]
    public void Requests_we_do_not_implement_have_no_row(uint id) =>
        Assert.False(VhostUserRequestTable.TryGet((VhostUserRequest)id, out _));

    [Fact]
    public void The_fd_rule_is_what_validation_enforces()
    {
        // One request per rule, with a well-formed payload: the counts the rule allows pass, the others are refused.
        byte[] u64 = new byte[8];
        byte[] region = new byte[32 + 8];
        byte[] log = new byte[16];
        Assert.Null(VhostUserMessage.Validate(VhostUserRequest.SetFeatures, u64, 0));
        Assert.NotNull(VhostUserMessage.Validate(VhostUserRequest.SetFeatures, u64, 1));
        Assert.Null(VhostUserMessage.Validate(VhostUserRequest.AddMemReg, region, 1));
        Assert.NotNull(VhostUserMessage.Validate(VhostUserRequest.AddMemReg, region, 0));
        Assert.NotNull(VhostUserMessage.Validate(VhostUserRequest.AddMemReg, region, 2));
        Assert.Null(VhostUserMessage.Validate(VhostUserRequest.RemMemReg, region, 0));
        Assert.Null(VhostUserMessage.Validate(VhostUserRequest.RemMemReg, region, 1));
        Assert.NotNull(VhostUserMessage.Validate(VhostUserRequest.RemMemReg, region, 2));
        Assert.Null(VhostUserMessage.Validate(VhostUserRequest.SetLogBase, log, 0));
        Assert.Null(VhostUserMessage.Validate(VhostUserRequest.SetLogBase, log, 1));
        Assert.NotNull(VhostUserMessage.Validate(VhostUserRequest.SetLogBase, log, 2));
    }
}
