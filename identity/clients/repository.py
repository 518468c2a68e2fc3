"""The only place that queries the clients table."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from identity.clients.models import Client


async def get(session: AsyncSession, client_id: str) -> Client | None:
    return await session.get(Client, client_id)


async def add(session: AsyncSession, client: Client) -> Client:
    session.add(client)
    await session.flush()
    return client
