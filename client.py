# client.py: a first request to the server that zeroserve.LitServer started.
# LitServer.run(generate_client_file=False) stops it from writing this file.
import requests

response = requests.post("http://127.0.0.1:8012/predict", json={"input": 4.0})
print(f"Status: {response.status_code}\nResponse:\n {response.text}")
