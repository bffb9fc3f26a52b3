from flowstore import Store
from flowstore.models import Deployment, DeploymentStatus


def test_round_trip_on_every_backend(store: Store) -> None:
    with store.unit_of_work() as uow:
        created = uow.deployments.add(
            Deployment(name="api", version="1.4.2", status=DeploymentStatus.RUNNING, config={"a": 1})
        )
    with store.unit_of_work() as uow:
        loaded = uow.deployments.get(created.id)
        assert (loaded.name, loaded.version, loaded.config) == ("api", "1.4.2", {"a": 1})
        assert loaded.status is DeploymentStatus.RUNNING
        assert loaded.created_at == created.created_at
        assert loaded.created_at.utcoffset() is not None
