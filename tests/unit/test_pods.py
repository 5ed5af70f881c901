"""Pod names from the kubelet's pod log directory: parsing, caching, bounded retries."""

from ebpfguard.enrich.pods import PodDirectory, PodName, parse_pod_log_dirs

UID_A = "0b7c4d2e-1f3a-4b5c-8d9e-0f1a2b3c4d5e"
UID_B = "9e8d7c6b-5a4f-4e3d-2c1b-0a9f8e7d6c5b"

# Entry names as a kubelet writes them (listing of /var/log/pods on a kubeadm node).
RECORDED_LISTING = [
    f"kube-system_coredns-76f75df574-xk2lp_{UID_A}",
    f"rl-sandboxes_agent-run-41.worker_{UID_B}",
    "lost+found",
    "not_a_pod_uid",
]


class FakeDir:
    """A pod log directory whose listing the test changes, counting how often it is read."""

    def __init__(self, entries):
        self.entries = list(entries)
        self.reads = 0

    def __call__(self, _path):
        self.reads += 1
        return list(self.entries)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_entries_are_split_into_namespace_name_and_uid_and_others_ignored():
    assert parse_pod_log_dirs(RECORDED_LISTING) == {
        UID_A: PodName("kube-system", "coredns-76f75df574-xk2lp"),
        UID_B: PodName("rl-sandboxes", "agent-run-41.worker"),
    }


def test_a_known_pod_is_answered_from_the_cache_without_listing_again():
    listing = FakeDir(RECORDED_LISTING)
    pods = PodDirectory("/var/log/pods", list_entries=listing)
    assert pods.lookup(UID_A) == PodName("kube-system", "coredns-76f75df574-xk2lp")
    assert pods.lookup(UID_B).namespace == "rl-sandboxes"
    assert listing.reads == 1


def test_an_unknown_uid_is_looked_for_again_only_after_the_retry_interval():
    listing, clock = FakeDir([]), Clock()
    pods = PodDirectory("/var/log/pods", retry_interval_s=5, list_entries=listing, clock=clock)
    assert pods.lookup(UID_A) is None
    listing.entries = RECORDED_LISTING
    clock.now += 1
    assert pods.lookup(UID_A) is None and listing.reads == 1
    clock.now += 5
    assert pods.lookup(UID_A).name == "coredns-76f75df574-xk2lp"
    assert listing.reads == 2


def test_a_new_pod_is_found_on_its_first_lookup_even_right_after_another_refresh():
    listing = FakeDir([RECORDED_LISTING[0]])
    pods = PodDirectory("/var/log/pods", list_entries=listing)
    assert pods.lookup(UID_A) is not None
    listing.entries = RECORDED_LISTING
    assert pods.lookup(UID_B) == PodName("rl-sandboxes", "agent-run-41.worker")


def test_the_cache_is_bounded():
    uids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(50)]
    pods = PodDirectory("/var/log/pods", max_pods=10, list_entries=lambda _: [f"ns_p{i}_{u}" for i, u in enumerate(uids)])
    pods.lookup(uids[-1])
    assert len(pods._known) == 10


def test_a_host_without_the_directory_names_no_pods(tmp_path):
    assert PodDirectory(str(tmp_path / "absent")).lookup(UID_A) is None
