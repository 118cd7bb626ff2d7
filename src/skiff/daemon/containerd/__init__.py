"""skiffd's side of containerd's gRPC API: the async client (``client``) and the supervisor that
finds or starts skiff-containerd (``supervisor``). skiffd keeps its objects in containerd's
namespace ``skiff``."""
