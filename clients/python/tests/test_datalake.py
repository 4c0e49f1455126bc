"""ListDataLake (Gen1 WebHDFS and Gen2 dfs) through the Python client."""

import pytest

import identity_gateway

pytestmark = pytest.mark.rpc("ListDataLake")


@pytest.fixture
def gen1_url(_skip_unimplemented_rpcs, emulator):
    return emulator.fake_url("ADLS Gen1", "gen1", "data lake store", "webhdfs")


@pytest.fixture
def gen2_url(_skip_unimplemented_rpcs, emulator):
    return emulator.fake_url("ADLS Gen2", "gen2", "dfs")


def test_gen1_root_listing(client, gen1_url):
    entries = {e.name: e for e in client.list_data_lake(gen1_url, "/", generation="gen1")}
    assert {"TestFolder", "vehicle1_09142014.csv", "logs", "generated"} <= set(entries)
    assert entries["TestFolder"].is_directory
    csv = entries["vehicle1_09142014.csv"]
    assert not csv.is_directory and csv.length > 0 and csv.modified is not None


def test_gen1_large_folder_streams_in_pages(client, gen1_url):
    pages = list(client.list_data_lake_pages(gen1_url, "/generated", generation="gen1", page_size=1000))
    assert [len(entries) for entries, _ in pages] == [1000, 1000, 500]
    assert all(continuation for _, continuation in pages[:-1])
    names = [e.name for entries, _ in pages for e in entries]
    assert len(set(names)) == 2500


def test_gen2_recursive_listing(client, gen2_url):
    entries = list(client.list_data_lake(gen2_url, "raw", filesystem="data", recursive=True, generation="gen2"))
    files = {e.name for e in entries if not e.is_directory}
    assert {"raw/2024/01/events.json", "raw/2024/02/events.json"} <= files
    assert next(e for e in entries if e.name == "raw/2024/01/events.json").length == 2048


def test_a_missing_path_is_not_found(client, gen2_url):
    with pytest.raises(identity_gateway.NotFound):
        list(client.list_data_lake(gen2_url, "no/such/dir", filesystem="data", generation="gen2"))
