"""The bookshelf's background worker: `python -m bookshelf.worker` runs an RQ worker on the queue
"bookshelf", with the Redis URL from the environment (REDIS_URL), until SIGTERM."""

import os

from redis import Redis
from rq import Worker


def main() -> None:
    Worker(["bookshelf"], connection=Redis.from_url(os.environ["REDIS_URL"])).work()


if __name__ == "__main__":
    main()
