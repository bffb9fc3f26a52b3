"""Change events through a transactional outbox (see docs/events.md).

Every insert, update and delete of a model on ``flowstore.models.Base`` made in a store's
sessions records an event (``"deployment.created"``, ``".updated"``, ``".deleted"``) in the
same transaction; ``uow.events.publish(...)`` adds domain events; ``store.events.read(after,
limit)`` returns committed events in commit order; ``flowstore events relay`` publishes them
to a Redis stream.
"""

from flowstore.events.capture import Change, Recording
from flowstore.events.log import Event, EventLog, EventPublisher

__all__ = ["Change", "Event", "EventLog", "EventPublisher", "Recording"]
