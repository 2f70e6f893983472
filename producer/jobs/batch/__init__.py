"""The OpenAI Batch API's job model on Kafka: files, batches, their state and their output.

No FastAPI here: the HTTP routes (``producer/frontend/routes``) and the CLI both drive it.
"""
