# Copyright The Lightning AI team.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
# Adapted for zeroserve from LitServe's tests/conftest.py: only the fixtures the e2e suite
# uses are kept (the others build FastAPI test clients), and every test here runs from this
# folder, as LitServe's suite runs from its repository's root (its paths are relative).
import base64
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _from_the_suites_root(monkeypatch):
    monkeypatch.chdir(SUITE)


@pytest.fixture
def openai_request_data():
    return {
        "model": "",
        "messages": [{"role": "string", "content": "string"}],
        "temperature": 0.7,
        "top_p": 1,
        "n": 1,
        "max_completion_tokens": 0,
        "stop": "string",
        "stream": False,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "user": "string",
    }


@pytest.fixture
def openai_request_data_with_audio_wav(openai_request_data):
    audio_data = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    encoded_string = base64.b64encode(bytearray(audio_data)).decode("utf-8")

    request_data = openai_request_data.copy()
    request_data["messages"] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this recording?"},
                {"type": "input_audio", "input_audio": {"data": encoded_string, "format": "wav"}},
            ],
        },
    ]
    return request_data
