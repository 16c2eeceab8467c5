"""An API whose decode_request is annotated with a pydantic model, as LitServe allows."""

from __future__ import annotations

from pydantic import BaseModel, Field

from zeroserve import LitAPI


class Item(BaseModel):
    name: str
    weight_kg: float = Field(gt=0)


class Order(BaseModel):
    item: Item
    quantity: int = Field(gt=0, le=100)


class OrderAPI(LitAPI):
    api_path = "/order"

    def decode_request(self, request: Order) -> Order:
        return request

    def predict(self, order: Order) -> dict:
        return {"item": order.item.name, "total_kg": order.item.weight_kg * order.quantity}
